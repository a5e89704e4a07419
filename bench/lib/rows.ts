import type { Field } from './api';

/** The CMS table every bulk-write benchmark writes: a typical blog-ish table. */
export const BENCH_FIELDS: Field[] = [
  { name: 'title', type: 'text', required: true },
  { name: 'body', type: 'text' },
  { name: 'views', type: 'number' },
  { name: 'featured', type: 'boolean' },
];

const WORDS =
  'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat'.split(
    ' ',
  );
const BODY_CHARS = 226;

/** Row `i`'s data: about 300 bytes of JSON, varied so that nothing compresses or caches trivially. */
export function rowData(i: number): Record<string, unknown> {
  let body = '';
  let x = (i * 2654435761) >>> 0;
  while (body.length < BODY_CHARS) {
    x = (x * 1103515245 + 12345) >>> 0;
    body += `${WORDS[x % WORDS.length]} `;
  }
  return {
    title: `Benchmark row ${String(i).padStart(7, '0')}`,
    body: body.slice(0, BODY_CHARS),
    views: (i * 7919) % 100_000,
    featured: i % 7 === 0,
  };
}

export interface InsertOp {
  op: 'insert';
  identifier: string;
  data: Record<string, unknown>;
}

/** `count` insert operations with identifiers `<prefix>-<n>`, rows numbered from `from`. */
export function insertOps(prefix: string, count: number, from = 0): InsertOp[] {
  return Array.from({ length: count }, (_, k) => ({
    op: 'insert' as const,
    identifier: `${prefix}-${from + k}`,
    data: rowData(from + k),
  }));
}

/** Average size of a row's JSON data in bytes, over a sample. */
export function averageRowBytes(sample = 1_000): number {
  let total = 0;
  for (let i = 0; i < sample; i++) total += Buffer.byteLength(JSON.stringify(rowData(i * 97)));
  return total / sample;
}

import http from 'node:http';
import { rowData } from './rows';

/**
 * An NDJSON import file of `rows` rows of the bench table (BENCH_FIELDS, ~300-byte rows), with
 * identifiers `<prefix>-<n>`, as buffers of 10,000 lines (a 1,000,000-row file is ~330 MB: kept
 * as pieces rather than one string).
 */
export function ndjsonFile(prefix: string, rows: number, from = 0): Buffer[] {
  const pieces: Buffer[] = [];
  for (let start = 0; start < rows; start += 10_000) {
    const lines: string[] = [];
    for (let k = start; k < Math.min(rows, start + 10_000); k++) {
      lines.push(JSON.stringify({ identifier: `${prefix}-${from + k}`, ...rowData(from + k) }));
    }
    pieces.push(Buffer.from(`${lines.join('\n')}\n`));
  }
  return pieces;
}

export const byteSize = (pieces: Buffer[]) => pieces.reduce((a, b) => a + b.length, 0);

/**
 * `POST /v1/cms-tables/:id/imports?format=ndjson…` with the file streamed from `pieces`; resolves
 * with the 202 job.
 */
export function postImport(
  apiUrl: string,
  token: string,
  tableId: string,
  pieces: Buffer[],
  query: { mode?: 'insert' | 'upsert'; onError?: 'abort' | 'skip' } = {},
  signal?: AbortSignal,
): Promise<{ id: string; status: string }> {
  const url = new URL(`/v1/cms-tables/${tableId}/imports`, apiUrl);
  url.searchParams.set('format', 'ndjson');
  if (query.mode) url.searchParams.set('mode', query.mode);
  if (query.onError) url.searchParams.set('onError', query.onError);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        signal,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/x-ndjson',
          'content-length': String(byteSize(pieces)),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 202) return reject(new Error(`import POST answered ${res.statusCode}: ${text.slice(0, 300)}`));
          try {
            resolve(JSON.parse(text));
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    let i = 0;
    const write = () => {
      while (i < pieces.length) {
        if (!req.write(pieces[i++]!)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
  });
}

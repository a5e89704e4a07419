import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import 'vitest';
import type { TestProject } from 'vitest/node';
import type { FigureRow } from './figures';

declare module 'vitest' {
  export interface ProvidedContext {
    /** JSON-lines file the fault tests append their figures to (see figures.ts). */
    faultFigures: string;
  }
}

/**
 * The fault suite's second global setup (after test/global-setup.ts): gives every test file one
 * file to append its figures to, and prints them as a table once the whole run is over.
 */
export default function setup(project: TestProject) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fault-figures-'));
  const file = path.join(dir, 'figures.jsonl');
  writeFileSync(file, '');
  project.provide('faultFigures', file);
  const started = Date.now();
  return () => {
    const rows = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as FigureRow);
    const table = formatTable(rows, (Date.now() - started) / 1000);
    console.log(`\n${table}\n`);
    // Kept beside the CI reports when there are any.
    const out = process.env.FAULT_TABLE_FILE;
    if (out) writeFileSync(out, table + '\n');
    rmSync(dir, { recursive: true, force: true });
  };
}

export function formatTable(rows: FigureRow[], seconds: number): string {
  const head = ['test', 'figure', 'expected', 'held'];
  // Files run side by side: group their rows, each file's in the order its tests recorded them.
  rows = [...rows].sort((a, b) => a.file.localeCompare(b.file));
  const body = rows.map((r) => [`${r.file}: ${r.test}`, r.figure, r.expected, r.held ? 'yes' : 'NO']);
  const widths = head.map((h, i) => Math.min(i === 0 ? 80 : 110, Math.max(h.length, ...body.map((b) => b[i]!.length))));
  const cut = (s: string, w: number) => (s.length > w ? s.slice(0, w - 1) + '…' : s.padEnd(w));
  const line = (cells: string[]) => `| ${cells.map((c, i) => cut(c, widths[i]!)).join(' | ')} |`;
  const held = rows.filter((r) => r.held).length;
  return [
    `Fault suite: ${rows.length} figure(s), ${held} held, ${rows.length - held} not held; ${Math.round(seconds)} s in all`,
    line(head),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...body.map(line),
  ].join('\n');
}

import { formatNumber } from './stats';
import type { BenchRow, Measure, ResultRow } from './types';

/** platform ÷ baseline, when both are measured in the same unit. */
export function ratioOf(row: BenchRow): number | null {
  if (!row.platform || !row.baseline || row.platform.unit !== row.baseline.unit || row.baseline.value === 0) return null;
  return row.platform.value / row.baseline.value;
}

const measure = (m: Measure | null) => (m ? `${formatNumber(m.value)} ${m.unit}` : '–');

function ratioText(r: ResultRow): string {
  if (r.ratio === null) return '–';
  return `${r.ratio >= 10 ? r.ratio.toFixed(0) : r.ratio >= 1 ? r.ratio.toFixed(1) : r.ratio.toFixed(2)}×`;
}

/** The table: columns bench, platform, baseline, ratio, note (the note is not cut). */
export function renderTable(rows: ResultRow[]): string {
  const header = ['bench', 'platform', 'baseline', 'ratio', 'note'];
  const cells = rows.map((r) => [r.bench, measure(r.platform), measure(r.baseline), ratioText(r), r.note ?? '']);
  const widths = header.map((h, c) => Math.max(h.length, ...cells.map((row) => (c === 4 ? 0 : row[c]!.length))));
  const line = (cols: string[]) =>
    cols.map((v, c) => (c === 4 ? v : c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join('  ').trimEnd();
  return [line(header), widths.map((w, c) => '-'.repeat(c === 4 ? 4 : w)).join('  '), ...cells.map(line)].join('\n');
}

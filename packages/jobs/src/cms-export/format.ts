import { stringify } from 'csv-stringify/sync';
import type { CmsField, ExportRow } from '@platform/db';

/**
 * Spreadsheets run a cell that starts with one of these as a formula (CSV injection, OWASP). The
 * CSV importer removes a leading `'` before one of them, so an export re-imports unchanged.
 */
const FORMULA_START = /^[=+\-@\t\r]/;

export function neutraliseText(s: string): string {
  return FORMULA_START.test(s) ? `'${s}` : s;
}

/** The field's value of a row, read as an own property only (a field may be named `__proto__`). */
function valueOf(data: Record<string, unknown> | null, name: string): unknown {
  return data && Object.hasOwn(data, name) ? data[name] : undefined;
}

/**
 * One CSV cell: null or missing → empty; json fields → JSON text; numbers and booleans as they
 * are (a number is never prefixed, `-5` stays a number); any other text neutralised.
 */
export function csvCell(field: CmsField, value: unknown): string {
  if (value === null || value === undefined) return '';
  if (field.type === 'json') return JSON.stringify(value);
  if (typeof value === 'number') return String(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'string') return neutraliseText(value);
  // A value of the wrong type for its field (written outside the API): its JSON text, still neutralised.
  return neutraliseText(JSON.stringify(value));
}

// RFC 4180: CRLF between records, and a cell holding any line break is quoted (csv-stringify
// only quotes the record delimiter itself, so a lone `\n` or `\r` would otherwise break a record).
const CSV_OPTIONS = { record_delimiter: '\r\n', quoted_match: /[\r\n]/ } as const;

export function csvHeader(fields: readonly CmsField[]): string {
  return stringify([['id', 'identifier', ...fields.map((f) => f.name)]], CSV_OPTIONS);
}

export function csvRecords(fields: readonly CmsField[], rows: readonly ExportRow[]): string {
  if (rows.length === 0) return '';
  return stringify(
    rows.map((r) => [r.id, neutraliseText(r.identifier), ...fields.map((f) => csvCell(f, valueOf(r.data, f.name)))]),
    CSV_OPTIONS,
  );
}

/** NDJSON: one object per row, keys `id`, `identifier`, then every field in order (null when missing). */
export function ndjsonRecords(fields: readonly CmsField[], rows: readonly ExportRow[]): string {
  let out = '';
  for (const r of rows) {
    // Built as text so the key order is the table's and no field name can touch a prototype.
    out += `{"id":${JSON.stringify(r.id)},"identifier":${JSON.stringify(r.identifier)}`;
    for (const f of fields) out += `,${JSON.stringify(f.name)}:${JSON.stringify(valueOf(r.data, f.name) ?? null)}`;
    out += '}\n';
  }
  return out;
}

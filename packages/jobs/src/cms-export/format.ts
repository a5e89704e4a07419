import { stringify } from 'csv-stringify/sync';
import type { CmsField } from '@platform/db';

// RFC 4180: CRLF between records, and a cell holding any line break is quoted (csv-stringify
// only quotes the record delimiter itself, so a lone `\n` or `\r` would otherwise break a record).
const CSV_OPTIONS = { record_delimiter: '\r\n', quoted_match: /[\r\n]/ } as const;

/** The CSV header record: `id`, `identifier`, then the table's fields in their order. */
export function csvHeader(fields: readonly CmsField[]): string {
  return stringify([['id', 'identifier', ...fields.map((f) => f.name)]], CSV_OPTIONS);
}

const CRLF = Buffer.from('\r\n');
const NEWLINE = 0x0a;
const QUOTE = 0x22;
/**
 * Reads a page of `exportPageCopySql` output chunk by chunk, whatever the chunk boundaries, and
 * returns the export's bytes: NDJSON lines pass as they are; a CSV record's closing `\n` becomes
 * CRLF (RFC 4180) while a `\n` inside a quoted cell stays data. It counts the records. Memory: a
 * few bytes of state, never a whole record.
 */
export class ExportRecords {
  rows = 0;
  private inQuote = false;
  /** Whether bytes of a record not yet ended have been read. */
  private open = false;

  constructor(private readonly format: 'csv' | 'ndjson') {}

  push(chunk: Buffer): Buffer {
    const csv = this.format === 'csv';
    const out: Buffer[] = [];
    let from = 0;
    let quote = csv ? chunk.indexOf(QUOTE) : -1;
    for (let i = 0; i < chunk.length; ) {
      this.open = true;
      const nl = chunk.indexOf(NEWLINE, i);
      const end = nl === -1 ? chunk.length : nl;
      // COPY's CSV writer only writes a quote to open or close a quoted cell, or doubled inside one.
      for (; quote !== -1 && quote < end; quote = chunk.indexOf(QUOTE, quote + 1)) this.inQuote = !this.inQuote;
      if (nl === -1) break;
      if (!this.inQuote) {
        if (csv) {
          out.push(chunk.subarray(from, nl), CRLF);
          from = nl + 1;
        }
        this.rows++;
        this.open = false;
      }
      i = nl + 1;
    }
    if (!csv) return chunk;
    if (from < chunk.length) out.push(chunk.subarray(from));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** True when the output ended on a record boundary (a COPY that completed always does). */
  get complete(): boolean {
    return !this.open && !this.inQuote;
  }
}

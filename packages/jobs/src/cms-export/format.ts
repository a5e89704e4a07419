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
/** Where a record's row id starts: CSV records begin with it, NDJSON lines with `{"id":"`. */
const ID_AT = { csv: 0, ndjson: 7 } as const;
const ID_LENGTH = 36;

/**
 * Reads a page of `exportPageCopySql` output chunk by chunk, whatever the chunk boundaries, and
 * returns the export's bytes: NDJSON lines pass as they are; a CSV record's closing `\n` becomes
 * CRLF (RFC 4180) while a `\n` inside a quoted cell stays data. It counts the records and keeps
 * the row id of the last one, the cursor of the next page. Memory: a few bytes of state, never a
 * whole record.
 */
export class ExportRecords {
  rows = 0;
  private inQuote = false;
  /** The first bytes of the record being read, up to the end of its row id. */
  private head: Buffer[] = [];
  private headLength = 0;
  private lastHead: Buffer | null = null;
  private readonly headSize: number;

  constructor(private readonly format: 'csv' | 'ndjson') {
    this.headSize = ID_AT[format] + ID_LENGTH;
  }

  push(chunk: Buffer): Buffer {
    const csv = this.format === 'csv';
    const out: Buffer[] = [];
    let from = 0;
    let quote = csv ? chunk.indexOf(QUOTE) : -1;
    for (let i = 0; i < chunk.length; ) {
      if (this.headLength < this.headSize) {
        const take = Math.min(this.headSize - this.headLength, chunk.length - i);
        this.head.push(Buffer.from(chunk.subarray(i, i + take)));
        this.headLength += take;
      }
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
        this.lastHead = Buffer.concat(this.head);
        this.head = [];
        this.headLength = 0;
      }
      i = nl + 1;
    }
    if (!csv) return chunk;
    if (from < chunk.length) out.push(chunk.subarray(from));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** The row id of the last whole record read, or null before the first. */
  get lastId(): string | null {
    return this.lastHead ? this.lastHead.toString('latin1', ID_AT[this.format], ID_AT[this.format] + ID_LENGTH) : null;
  }

  /** True when the output ended on a record boundary (a COPY that completed always does). */
  get complete(): boolean {
    return this.headLength === 0 && !this.inQuote;
  }
}

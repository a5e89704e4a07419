import { stringify } from 'csv-stringify/sync';
import type { CmsField } from '@platform/db';

// RFC 4180: CRLF between records, and a cell holding any line break is quoted (csv-stringify
// only quotes the record delimiter itself, so a lone `\n` or `\r` would otherwise break a record).
const CSV_OPTIONS = { record_delimiter: '\r\n', quoted_match: /[\r\n]/ } as const;

/** The CSV header record: `id`, `identifier`, then the table's fields in their order. */
export function csvHeader(fields: readonly CmsField[]): string {
  return stringify([['id', 'identifier', ...fields.map((f) => f.name)]], CSV_OPTIONS);
}

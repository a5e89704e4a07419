import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { MAX_UUID, MIN_UUID } from '../ids';
import type { CmsField } from '../schema/index';

/** What an export covers: with `published`, the rows that have live data; otherwise every row not deleted. */
export interface ExportFilter {
  tableId: string;
  teamId: string;
  published: boolean;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A uuid inlined into SQL: COPY takes no parameters, so only a well-formed uuid gets in. */
function uuidLiteral(value: string): string {
  if (!UUID_RE.test(value)) throw new Error(`not a uuid: ${JSON.stringify(value).slice(0, 80)}`);
  return `'${value}'::uuid`;
}

/**
 * A text inlined into SQL as an escape string literal (`E'…'`, backslashes and quotes doubled):
 * read the same whatever `standard_conforming_strings` says.
 */
function textLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('a NUL character cannot be part of an SQL literal');
  return `E'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

/**
 * Code points of the first characters that make a spreadsheet run a cell as a formula: `=`, `+`,
 * `@`, tab, carriage return, and `-` (45), which a number keeps. Tested with `ascii()`, one integer
 * per cell: `left(t, 1) in (…)` cost as much as reading the row.
 */
const FORMULA_FIRST = '(61, 43, 64, 9, 13, 45)';

/** The text `t` with a leading `'` when a spreadsheet would run it (`isText` tells a `-` text from a negative number). */
function neutralised(t: string, isText: string): string {
  const test = isText === 'true' ? `ascii(${t}) in ${FORMULA_FIRST}` : `ascii(${t}) in ${FORMULA_FIRST} and (ascii(${t}) <> 45 or ${isText})`;
  return `case when ${test} then '''' || ${t} else ${t} end`;
}

/**
 * The rows an export covers, as SQL over `cms_rows r` (inlined: COPY takes no parameters). Same
 * rows as `listRows` lists: soft-deleted rows are never exported.
 *
 * `ordered`: for a query in id order, with the keyset bounds: after `afterId` and up to `upTo`
 * (inclusive) when given. The table is then chosen by bounds on `(table_id, id)` rather than
 * `table_id = …`: with the equality the planner drops `table_id` from `order by table_id, id` and
 * may walk the primary key from one end past every other table's rows (a page took 0.4–0.5 s
 * behind 2M of them); bounds keep the order that only the `(table_id, id)` index gives.
 */
function exportWhere(f: ExportFilter, ordered?: { afterId?: string | null; upTo?: string | null }): string {
  const table = uuidLiteral(f.tableId);
  const bounds = ordered
    ? [
        ordered.afterId ? `(r.table_id, r.id) > (${table}, ${uuidLiteral(ordered.afterId)})` : `(r.table_id, r.id) >= (${table}, '${MIN_UUID}'::uuid)`,
        `(r.table_id, r.id) <= (${table}, ${uuidLiteral(ordered.upTo ?? MAX_UUID)})`,
      ]
    : [`r.table_id = ${table}`];
  return [...bounds, `r.team_id = ${uuidLiteral(f.teamId)}`, ...rowsCovered(f)].join(' and ');
}

/** Which of a table's rows an export covers: not deleted, and with live data when `published`. */
const rowsCovered = (f: ExportFilter) => ['r.deleted_at is null', ...(f.published ? ['r.data is not null'] : [])];

export interface ExportPage extends ExportFilter {
  fields: readonly CmsField[];
  format: 'csv' | 'ndjson';
  /** Rows of the page. */
  limit: number;
  /** Keyset cursor: the page starts after this row id. */
  afterId?: string | null;
  /** The page ends at this row id at the latest (the end of a range of the export). */
  upTo?: string | null;
  /**
   * Whether the server's encoding is UTF-8 (`serverIsUtf8`). An NDJSON page is a binary COPY,
   * which sends text in the server's encoding: from any other it is converted in the query.
   */
  utf8Server: boolean;
}

/**
 * One keyset page of an export (never OFFSET: page N costs what page 1 does, on the `(table_id,
 * id)` index) as a `COPY … TO STDOUT` whose output is the export's own bytes, formatted by
 * PostgreSQL: the rows never become JavaScript objects.
 *
 * - CSV: one column per field, quoted by COPY's CSV writer (RFC 4180 quoting; records end in
 *   `\n`, which the reader turns into CRLF). A text cell starting with a formula character gets a
 *   leading `'`; numbers, booleans and json cells never do (`-5` stays a number). Null or missing
 *   values are empty cells; json fields are their JSON text.
 * - NDJSON: one column, the whole line `{"id":…,"identifier":…,<field>:<value>,…}` with keys in
 *   the table's order and `null` for a missing field, without its `\n`; a binary COPY sends the
 *   line as built (CSV or text output would scan every byte for characters to quote or escape:
 *   ~17% of PostgreSQL's time for these lines), and the reader (`CopyRecords`) ends it.
 *
 * Every record starts with the row id (CSV: its first 36 bytes; NDJSON: bytes 7–43), which the
 * reader takes as the next page's cursor.
 */
export function exportPageCopySql(p: ExportPage): string {
  if (!Number.isSafeInteger(p.limit) || p.limit < 1) throw new Error(`invalid page size ${p.limit}`);
  const src = p.published ? 'r.data' : 'r.draft_data';
  const page = `where ${exportWhere(p, { afterId: p.afterId, upTo: p.upTo })} order by r.table_id, r.id limit ${p.limit}`;
  const value = (f: CmsField) => `${src}->${textLiteral(f.name)}`;

  if (p.format === 'ndjson') {
    const parts = [
      `'{"id":"' || r.id || '","identifier":' || to_json(r.identifier)::text`,
      ...p.fields.map((f) => `${textLiteral(`,${JSON.stringify(f.name)}:`)} || coalesce(${value(f)}, 'null')::text`),
      `'}'`,
    ];
    const line = parts.join(' || ');
    return `copy (select ${p.utf8Server ? line : `convert_to(${line}, 'UTF8')`} from cms_rows r ${page}) to stdout (format binary)`;
  }
  // Each value is taken out of the JSON once, in a lateral subquery that `offset 0` keeps from
  // being folded back into the expressions (where the neutralising test would extract it again).
  const picked = p.fields.map((f, i) => (f.type === 'json' ? `(${value(f)})::text as c${i}` : `${src}->>${textLiteral(f.name)} as c${i}`));
  const cells = p.fields.map((f, i) =>
    f.type === 'json' ? `nullif(x.c${i}, 'null')` : neutralised(`x.c${i}`, `jsonb_typeof(${value(f)}) = 'string'`),
  );
  const columns = ['r.id', neutralised('r.identifier', 'true'), ...cells].join(', ');
  const from = picked.length > 0 ? `cms_rows r cross join lateral (select ${picked.join(', ')} offset 0) x` : 'cms_rows r';
  return `copy (select ${columns} from ${from} ${page}) to stdout (format csv)`;
}

/** Whether the server's encoding is UTF-8 (what an NDJSON page needs to know: `ExportPage.utf8Server`). */
export async function serverIsUtf8(db: DbOrTx): Promise<boolean> {
  const r = await db.execute<{ utf8: boolean }>(sql.raw(`select current_setting('server_encoding') = 'UTF8' as utf8`));
  return r.rows[0]?.utf8 === true;
}

/**
 * Where an export's rows start and end: the first and last row ids (null when it has none), and
 * how many rows it has, counted up to `cap` only (a quick look through the index, to decide how
 * many ranges to cut it into; `countExportRows` counts them all). With `within`, the same for its
 * rows after `afterId` and up to `upTo` (a range still to be read).
 */
export async function exportBounds(
  db: DbOrTx,
  f: ExportFilter,
  cap: number,
  within: { afterId?: string | null; upTo?: string | null } = {},
): Promise<{ first: string | null; last: string | null; some: number }> {
  if (!Number.isSafeInteger(cap) || cap < 1) throw new Error(`invalid cap ${cap}`);
  const inOrder = exportWhere(f, within);
  const r = await db.execute<{ some: number; first: string | null; last: string | null }>(
    sql.raw(
      `select (select count(*)::int from (select 1 from cms_rows r where ${inOrder} order by r.table_id, r.id limit ${cap}) s) as some,
              (select r.id::text from cms_rows r where ${inOrder} order by r.table_id, r.id limit 1) as first,
              (select r.id::text from cms_rows r where ${inOrder} order by r.table_id desc, r.id desc limit 1) as last`,
    ),
  );
  const row = r.rows[0];
  return { first: row?.first ?? null, last: row?.last ?? null, some: row?.some ?? 0 };
}

/**
 * How many rows an export covers when it starts (its `progress.total`). Counted without the team:
 * a table's rows are its team's (every write takes `team_id` from the table it checked the team
 * owns, and the export checked it too). Then a draft export's count is an index-only scan of the
 * `(table_id, identifier) where deleted_at is null` index once the table is vacuumed: 1M rows
 * behind 2M others in 60–90 ms against 260–300 ms for a parallel seq scan, and a third of the CPU.
 * PostgreSQL takes the seq scan when the visibility map says the index would not save it.
 */
export async function countExportRows(db: DbOrTx, f: ExportFilter): Promise<number> {
  const r = await db.execute<{ n: number }>(sql.raw(exportCountSql(f)));
  return r.rows[0]?.n ?? 0;
}

/** The statement of `countExportRows`. */
export function exportCountSql(f: ExportFilter): string {
  const where = [`r.table_id = ${uuidLiteral(f.tableId)}`, ...rowsCovered(f)].join(' and ');
  return `select count(*)::int as n from cms_rows r where ${where}`;
}

/**
 * `parts - 1` row ids that cut the span from `first` to `last` into `parts` ranges to be read side
 * by side (each cut is the last id of its range), spread evenly as 128-bit numbers: row ids are
 * UUIDv7, so rows written at a steady pace (an import) fall evenly into the ranges. An uneven
 * spread is only slower; every row is in exactly one range whatever the cuts.
 */
export function idCuts(first: string, last: string, parts: number): string[] {
  const lo = uuidNumber(first);
  const hi = uuidNumber(last);
  const cuts: string[] = [];
  let previous = -1n;
  for (let i = 1; i < parts; i++) {
    const at = lo + ((hi - lo) * BigInt(i)) / BigInt(parts);
    if (at >= hi || at <= previous) continue;
    const h = at.toString(16).padStart(32, '0');
    cuts.push(`${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`);
    previous = at;
  }
  return cuts;
}

const uuidNumber = (id: string) => BigInt(`0x${id.replaceAll('-', '')}`);

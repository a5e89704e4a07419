import type pg from 'pg';
import { uuidv7 } from '@platform/db';
import { nextTurn } from '../lines';
import { copyValue, type CopyIn } from './copy-in';

/**
 * Set-based row writes for chunk transactions: one statement per batch, arrays bound as
 * parameters (`unnest`), so a chunk of thousands of rows is a handful of round trips.
 */

export interface RowInsert {
  identifier?: string;
  data: Record<string, unknown>;
  /** `data` as JSON text already (`insertRowsCopy` sends it as it is). */
  dataText?: string;
}

export async function insertRows(
  client: pg.PoolClient,
  table: { id: string; teamId: string },
  rows: RowInsert[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const res = await client.query(await insertRowsStatement(table, rows));
  return res.rowCount ?? 0;
}

/** Rows encoded between two turns of the event loop while a statement is built. */
const ENCODE_SLICE = 250;

/**
 * The statement `insertRows` runs, with every parameter already text: the rows' data as one JSON
 * array (no per-element escaping, unlike a `jsonb[]` literal), the ids and identifiers as array
 * literals. Built before the chunk's transaction begins, and in slices that let the event loop
 * turn: encoding 13,000 rows took ~100 ms of CPU, during which the process's other chunk
 * transactions waited for their next statement with their locks held.
 */
export async function insertRowsStatement(table: { id: string; teamId: string }, rows: RowInsert[]): Promise<pg.QueryConfig> {
  const ids = new Array<string>(rows.length);
  const identifiers = new Array<string | null>(rows.length);
  const data: string[] = [];
  for (let from = 0; from < rows.length; from += ENCODE_SLICE) {
    if (from > 0) await nextTurn();
    const slice = rows.slice(from, from + ENCODE_SLICE);
    slice.forEach((r, i) => {
      ids[from + i] = uuidv7();
      identifiers[from + i] = r.identifier ?? null;
    });
    data.push(JSON.stringify(slice.map((r) => r.data)).slice(1, -1));
  }
  return {
    text: `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select u.id, $1, $2, coalesce(u.ident, u.id::text), u.d
     from rows from (unnest($3::uuid[]), unnest($4::text[]), jsonb_array_elements($5::jsonb)) as u(id, ident, d)`,
    values: [table.id, table.teamId, arrayLiteral(ids), arrayLiteral(identifiers), `[${data.join(',')}]`],
  };
}

/**
 * The same rows as a prepared `COPY cms_rows … FROM STDIN` (`runCopyIn`): PostgreSQL parses each
 * row's JSON once and builds no intermediate array. A row without an identifier gets its id, as
 * `insertRowsStatement` gives it.
 */
export async function insertRowsCopy(table: { id: string; teamId: string }, rows: RowInsert[]): Promise<CopyIn> {
  const parts: string[] = [];
  const fixed = `\t${table.id}\t${table.teamId}\t`;
  for (let from = 0; from < rows.length; from += ENCODE_SLICE) {
    if (from > 0) await nextTurn();
    let text = '';
    for (const r of rows.slice(from, from + ENCODE_SLICE)) {
      const id = uuidv7();
      text += `${id}${fixed}${copyValue(r.identifier ?? id)}\t${copyValue(r.dataText ?? JSON.stringify(r.data))}\n`;
    }
    parts.push(text);
  }
  return {
    sql: 'copy cms_rows (id, table_id, team_id, identifier, draft_data) from stdin',
    data: Buffer.from(parts.join(''), 'utf8'),
    rows: rows.length,
  };
}

/** A PostgreSQL array literal of texts (`{"a","b\\"c",NULL}`), as node-postgres would send the array. */
export function arrayLiteral(items: readonly (string | null)[]): string {
  const parts = new Array<string>(items.length);
  for (let i = 0; i < items.length; i++) {
    const v = items[i];
    parts[i] = v === null || v === undefined ? 'NULL' : `"${v.replace(/[\\"]/g, '\\$&')}"`;
  }
  return `{${parts.join(',')}}`;
}

export type RowKey = { by: 'id' | 'identifier'; key: string };

/** An update of rows' drafts: each row's draft replaced, matched by id or identifier. */
export function updateRowsStatement(
  tableId: string,
  by: 'id' | 'identifier',
  rows: { key: string; data: Record<string, unknown> }[],
): pg.QueryConfig {
  const match = by === 'id' ? 'r.id = u.k::uuid' : 'r.identifier = u.k';
  return {
    text: `update cms_rows r set draft_data = u.d, updated_at = now()
     from unnest($2::text[], $3::jsonb[]) as u(k, d)
     where r.table_id = $1 and r.deleted_at is null and ${match}`,
    values: [tableId, rows.map((r) => r.key), rows.map((r) => JSON.stringify(r.data))],
  };
}

/** A delete of rows: the rows marked deleted, matched by id or identifier. */
export function deleteRowsStatement(tableId: string, by: 'id' | 'identifier', keys: string[]): pg.QueryConfig {
  const match = by === 'id' ? 'id = any($2::uuid[])' : 'identifier = any($2::text[])';
  return {
    text: `update cms_rows set deleted_at = now(), updated_at = now()
     where table_id = $1 and deleted_at is null and ${match}`,
    values: [tableId, keys],
  };
}

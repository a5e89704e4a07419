import type pg from 'pg';
import { uuidv7 } from '@platform/db';

/**
 * Set-based row writes for chunk transactions: one statement per batch, arrays bound as
 * parameters (`unnest`), so a chunk of thousands of rows is a handful of round trips.
 */

export interface RowInsert {
  identifier?: string;
  data: Record<string, unknown>;
}

export async function insertRows(
  client: pg.PoolClient,
  table: { id: string; teamId: string },
  rows: RowInsert[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const res = await client.query(insertRowsStatement(table, rows));
  return res.rowCount ?? 0;
}

/**
 * The statement `insertRows` runs, with every parameter already text: built before the chunk's
 * transaction begins, the JSON and array encoding of thousands of rows (tens of milliseconds of
 * CPU) is not spent while the transaction holds its locks.
 */
export function insertRowsStatement(table: { id: string; teamId: string }, rows: RowInsert[]): pg.QueryConfig {
  return {
    text: `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select u.id, $1, $2, coalesce(u.ident, u.id::text), u.d
     from unnest($3::uuid[], $4::text[], $5::jsonb[]) as u(id, ident, d)`,
    values: [
      table.id,
      table.teamId,
      arrayLiteral(rows.map(() => uuidv7())),
      arrayLiteral(rows.map((r) => r.identifier ?? null)),
      arrayLiteral(rows.map((r) => JSON.stringify(r.data))),
    ],
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

export async function updateRows(
  client: pg.PoolClient,
  tableId: string,
  by: 'id' | 'identifier',
  rows: { key: string; data: Record<string, unknown> }[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const match = by === 'id' ? 'r.id = u.k::uuid' : 'r.identifier = u.k';
  const res = await client.query(
    `update cms_rows r set draft_data = u.d, updated_at = now()
     from unnest($2::text[], $3::jsonb[]) as u(k, d)
     where r.table_id = $1 and r.deleted_at is null and ${match}`,
    [tableId, rows.map((r) => r.key), rows.map((r) => JSON.stringify(r.data))],
  );
  return res.rowCount ?? 0;
}

export async function deleteRows(
  client: pg.PoolClient,
  tableId: string,
  by: 'id' | 'identifier',
  keys: string[],
): Promise<number> {
  if (keys.length === 0) return 0;
  const match = by === 'id' ? 'id = any($2::uuid[])' : 'identifier = any($2::text[])';
  const res = await client.query(
    `update cms_rows set deleted_at = now(), updated_at = now()
     where table_id = $1 and deleted_at is null and ${match}`,
    [tableId, keys],
  );
  return res.rowCount ?? 0;
}

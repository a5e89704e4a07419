import type pg from 'pg';
import { uuidv7 } from '@platform/db';
import { arrayLiteral } from '../cms/row-writes';

/** A pool (reads between chunks) or a chunk transaction's client (writes). */
type Queryable = Pick<pg.Pool, 'query'> | pg.PoolClient;

/** Identifiers this import claimed in earlier chunks, with the line that claimed each. */
export async function findClaims(db: Queryable, jobId: string, identifiers: string[]): Promise<Map<string, number>> {
  if (identifiers.length === 0) return new Map();
  const r = await db.query<{ identifier: string; line: number }>(
    `select identifier, line from cms_import_keys where job_id = $1 and identifier = any($2::text[])`,
    [jobId, identifiers],
  );
  return new Map(r.rows.map((x) => [x.identifier, x.line]));
}

/** Identifiers that name a live row of the table. */
export async function findExisting(db: Queryable, tableId: string, identifiers: string[]): Promise<Set<string>> {
  if (identifiers.length === 0) return new Set();
  const r = await db.query<{ identifier: string }>(
    `select identifier from cms_rows where table_id = $1 and deleted_at is null and identifier = any($2::text[])`,
    [tableId, identifiers],
  );
  return new Set(r.rows.map((x) => x.identifier));
}

/**
 * Records the identifiers a chunk claimed; a repeat of a claim is a bug upstream and fails the
 * chunk. The statement is built (its arrays encoded) before the chunk's transaction; null when
 * there is nothing to claim.
 */
export function claimIdentifiersStatement(jobId: string, claims: { identifier: string; line: number }[]): pg.QueryConfig | null {
  if (claims.length === 0) return null;
  return {
    text: `insert into cms_import_keys (job_id, identifier, line)
     select $1, u.identifier, u.line from unnest($2::text[], $3::int[]) as u(identifier, line)`,
    values: [jobId, arrayLiteral(claims.map((c) => c.identifier)), arrayLiteral(claims.map((c) => String(c.line)))],
  };
}

/**
 * Deletes an import's claims in batches, so no single statement holds many row locks or runs long
 * (a 1M-row import leaves 1M claims).
 */
export async function dropClaims(db: Queryable, jobId: string, batch = 20_000): Promise<void> {
  for (;;) {
    const r = await db.query(
      `delete from cms_import_keys where ctid = any(array(
         select ctid from cms_import_keys where job_id = $1 limit $2))`,
      [jobId, batch],
    );
    if ((r.rowCount ?? 0) < batch) return;
  }
}

/**
 * Replaces the draft of the live row with the same identifier, or adds a row. Identifiers must be
 * distinct within one call (Postgres refuses to touch a row twice in one statement). A row without
 * an identifier is always added, its identifier being its id.
 */
export async function upsertRows(
  client: pg.PoolClient,
  table: { id: string; teamId: string },
  rows: { identifier?: string; data: Record<string, unknown> }[],
): Promise<{ inserted: number; updated: number }> {
  if (rows.length === 0) return { inserted: 0, updated: 0 };
  const r = await client.query<{ inserted: boolean }>(
    `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select u.id, $1, $2, coalesce(u.ident, u.id::text), u.d
     from unnest($3::uuid[], $4::text[], $5::jsonb[]) as u(id, ident, d)
     on conflict (table_id, identifier) where deleted_at is null
     do update set draft_data = excluded.draft_data, updated_at = now()
     returning (xmax = 0) as inserted`,
    [
      table.id,
      table.teamId,
      rows.map(() => uuidv7()),
      rows.map((x) => x.identifier ?? null),
      rows.map((x) => JSON.stringify(x.data)),
    ],
  );
  const inserted = r.rows.filter((x) => x.inserted).length;
  return { inserted, updated: r.rows.length - inserted };
}

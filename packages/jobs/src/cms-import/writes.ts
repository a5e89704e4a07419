import type pg from 'pg';
import { claimsTable, uuidv7 } from '@platform/db';
import { copyValue, type CopyIn } from '../cms/copy-in';
import type { RowProblem } from './rows';

/** A pool (reads between chunks) or a chunk transaction's client (writes). */
type Queryable = Pick<pg.Pool, 'query'> | pg.PoolClient;

/** Identifiers this import claimed in earlier chunks (its claims table), with the first line that claimed each. */
export async function findClaims(db: Queryable, jobId: string, identifiers: string[]): Promise<Map<string, number>> {
  if (identifiers.length === 0) return new Map();
  const r = await db.query<{ identifier: string; line: number }>(
    `select identifier, min(line) as line from ${claimsTable(jobId)} where identifier = any($1::text[]) group by identifier`,
    [identifiers],
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
 * Records the identifiers a chunk claimed in the job's claims table (`createClaimsTable`), as a
 * COPY prepared before the chunk's transaction; null when there is nothing to claim.
 */
export function claimIdentifiersCopy(jobId: string, claims: { identifier: string; line: number }[]): CopyIn | null {
  if (claims.length === 0) return null;
  const lines = claims.map((c) => `${copyValue(c.identifier)}\t${c.line}\n`);
  return { sql: `copy ${claimsTable(jobId)} (identifier, line) from stdin`, data: Buffer.from(lines.join(''), 'utf8'), rows: claims.length };
}

/**
 * The rows a validate pass claimed whose identifier cannot be inserted, found with one read of the
 * claims table once the pass has claimed every valid row: those whose identifier a live row of the
 * table has ("already exists", every one of them), then those whose identifier an earlier line
 * claimed ("repeats the row on line N"). How many, and the first `limit` by line.
 */
export async function findIdentifierProblems(
  db: Queryable,
  jobId: string,
  tableId: string,
  limit: number,
): Promise<{ count: number; problems: RowProblem[] }> {
  const t = claimsTable(jobId);
  const r = await db.query<{ line: number; identifier: string; first: number | null; n: number }>({
    // About 0.75 s per million claims here; a 1 GiB file of short lines holds tens of millions,
    // past the pool's 20 s answer timeout, which is meant for chunk statements.
    query_timeout: 15 * 60_000,
    text: `with existing as (
       select distinct k.identifier from ${t} k
       join cms_rows r on r.table_id = $1 and r.deleted_at is null and r.identifier = k.identifier
     ), firsts as (
       select identifier, min(line) as first from ${t}
       where identifier not in (select identifier from existing)
       group by identifier having count(*) > 1
     ), bad as (
       select k.line, k.identifier, null::int as first from ${t} k join existing e using (identifier)
       union all
       select k.line, k.identifier, f.first from ${t} k join firsts f using (identifier) where k.line <> f.first
     )
     select line, identifier, first, (count(*) over ())::int as n from bad order by line limit $2`,
    values: [tableId, limit],
    // pg reads a per-query query_timeout (client.js); its types do not list it.
  } as pg.QueryConfig);
  return {
    count: r.rows[0]?.n ?? 0,
    problems: r.rows.map((x) => ({
      line: x.line,
      field: 'identifier',
      message: x.first === null ? existsMessage(x.identifier) : repeatMessage(x.identifier, x.first),
    })),
  };
}

export const existsMessage = (identifier: string) => `identifier ${JSON.stringify(identifier)} already exists in the table`;
export const repeatMessage = (identifier: string, first: number) => `identifier ${JSON.stringify(identifier)} repeats the row on line ${first}`;

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

import type pg from 'pg';
import { MAX_UUID, MIN_UUID } from '@platform/db';

/** A pool (reads outside any transaction) or the chunk transaction's client (writes). */
type Sql = pg.Pool | pg.PoolClient;

/**
 * The SQL of a publish. What "live" means for a row, in one place: a row that is not deleted
 * shows its draft; a deleted row shows nothing (its live data goes back to null). Rows whose
 * live data already is that (deleted rows never published, rows published unchanged) are left
 * alone and not counted.
 */
const LIVE = `case when deleted_at is null then draft_data end`;
/** Rows a publish looks at: the table's rows that are not deleted, and deleted ones still live. */
const CONCERNED = `(deleted_at is null or data is not null)`;

/** The version a job made, if it made one (`project_versions.job_id` is unique). */
export async function versionOfJob(db: Sql, jobId: string): Promise<{ id: string; version: number } | undefined> {
  const r = await db.query<{ id: string; version: number }>('select id, version from project_versions where job_id = $1', [jobId]);
  return r.rows[0];
}

/** The number the next version of the project takes (publishes of one project run one at a time). */
export async function nextVersionNumber(db: Sql, projectId: string): Promise<number> {
  const r = await db.query<{ next: number }>(
    'select coalesce(max(version), 0)::int + 1 as next from project_versions where project_id = $1',
    [projectId],
  );
  return r.rows[0]!.next;
}

export async function revisionExists(db: Sql, p: { projectId: string; revisionId: string; teamId: string }): Promise<boolean> {
  const r = await db.query(
    'select 1 from project_revisions where id = $1 and project_id = $2 and team_id = $3',
    [p.revisionId, p.projectId, p.teamId],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Rows the publish will go through, across the tables (the job's progress total). */
export async function countConcernedRows(db: Sql, tableIds: string[], teamId: string): Promise<number> {
  if (tableIds.length === 0) return 0;
  const r = await db.query<{ n: number }>(
    `select count(*)::int as n from cms_rows where table_id = any($1::uuid[]) and team_id = $2 and ${CONCERNED}`,
    [tableIds, teamId],
  );
  return r.rows[0]!.n;
}

/**
 * Snapshots the revision into a version made by this job. The data is copied in SQL, so any
 * JSON (a JSON `null` included) is kept as it is. Returns false when the revision is gone.
 */
export async function insertVersion(
  client: Sql,
  v: { id: string; version: number; jobId: string; projectId: string; revisionId: string; teamId: string },
): Promise<boolean> {
  const r = await client.query(
    `insert into project_versions (id, project_id, team_id, version, revision_id, data, job_id)
     select $1, project_id, team_id, $2, id, data, $3
     from project_revisions where id = $4 and project_id = $5 and team_id = $6`,
    [v.id, v.version, v.jobId, v.revisionId, v.projectId, v.teamId],
  );
  return (r.rowCount ?? 0) === 1;
}

export interface Batch {
  /** Rows in the batch (at most the limit). */
  rows: number;
  /** Rows of the batch whose live data the publish changes. */
  changes: number;
  /** Highest id of the batch (null when empty). */
  lastId: string | null;
}

/**
 * The query of `readBatch` ($1 table, $2 team, $3 limit, $4 the later parts' first row numbers,
 * $5 the last id read, when there is one). The table is chosen by bounds on `(table_id, id)`, not
 * `table_id = $1`: with the equality the planner may walk the primary key from its start past
 * every older row of other tables (UUIDv7 ids) to find the first batch.
 */
export function readBatchSql(afterLastId: boolean): string {
  const from = afterLastId ? `(table_id, id) > ($1::uuid, $5::uuid)` : `(table_id, id) >= ($1::uuid, '${MIN_UUID}'::uuid)`;
  return `select count(*)::int as rows,
            count(*) filter (where data is distinct from live)::int as changes,
            (array_agg(id order by id desc))[1] as last_id
     from (
       select id, data, ${LIVE} as live, row_number() over (order by id) as n from (
         select id, data, draft_data, deleted_at from cms_rows
         where ${from} and (table_id, id) <= ($1::uuid, '${MAX_UUID}'::uuid)
           and team_id = $2 and ${CONCERNED}
         order by table_id, id limit $3
       ) l
     ) b
     group by width_bucket(b.n, $4::bigint[]) order by width_bucket(b.n, $4::bigint[])`;
}

/**
 * The next keyset batch of a table (read outside the write transaction), in parts: for each part
 * its rows, its changes and its highest id. `ends` are the parts' ends within the batch (1-based
 * row numbers, ascending, the last the limit); a short batch has fewer parts. Empty: no parts.
 */
export async function readBatch(db: Sql, tableId: string, teamId: string, lastId: string | null, ends: readonly number[]): Promise<Batch[]> {
  const limit = ends[ends.length - 1]!;
  // width_bucket against each later part's first row number: 0 for the first part, 1 for the next…
  const params: unknown[] = [tableId, teamId, limit, ends.slice(0, -1).map((e) => e + 1)];
  if (lastId !== null) params.push(lastId);
  const r = await db.query<{ rows: number; changes: number; last_id: string }>(readBatchSql(lastId !== null), params);
  return r.rows.map((row) => ({ rows: row.rows, changes: row.changes, lastId: row.last_id }));
}

/**
 * The statement of `publishRange` ($1 table, $2 team, $3 the range's last id, $4 the last id
 * before it, when there is one). Bounded on both sides: with `table_id = $1 and id <= $3` alone
 * the planner may range-scan the primary key from its start, past every older row of other tables,
 * inside the chunk's transaction. (Not by row values as in readBatchSql: a row value as the upper
 * bound does not end the scan, which then runs on to the table's last entry.)
 */
export function publishRangeSql(afterLastId: boolean): string {
  // The first range has no last id: it starts at the table's first id, found through the
  // (table_id, id) index, so that the range is bounded on both sides like every other one.
  const first = `(select id from cms_rows where (table_id, id) >= ($1::uuid, '${MIN_UUID}'::uuid) order by table_id, id limit 1)`;
  const from = afterLastId ? `id > $4::uuid` : `id >= ${first}`;
  return `update cms_rows set data = ${LIVE}, updated_at = now()
     where table_id = $1 and ${from} and id <= $3::uuid and team_id = $2
       and ${CONCERNED} and data is distinct from ${LIVE}`;
}

/**
 * Makes the rows of one id range live (`lastId < id <= toId`), writing only those whose live data
 * changes. Returns how many it changed.
 */
export async function publishRange(
  client: Sql,
  tableId: string,
  teamId: string,
  lastId: string | null,
  toId: string,
): Promise<number> {
  const params: unknown[] = [tableId, teamId, toId];
  if (lastId !== null) params.push(lastId);
  const r = await client.query(publishRangeSql(lastId !== null), params);
  return r.rowCount ?? 0;
}

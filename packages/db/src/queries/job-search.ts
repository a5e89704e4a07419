import { and, asc, desc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { jobChunks, jobs, teams, type JobStatus } from '../schema/index';
import type { JobRow } from './jobs';

/**
 * The support dashboard's reads of the job history, across all teams (staff see every team; the
 * team-facing queries in jobs.ts always filter by one). Every read is bounded.
 *
 * Search is a keyset scan, newest first, on `(created_at, id)`. Each filter it serves has an index
 * that yields rows already in that order (migration 0003_dashboard_job_indexes: `jobs_created_idx`,
 * `jobs_status_created_idx`, `jobs_type_created_idx`, `jobs_team_status_created_idx`; and
 * `jobs_team_created_idx` from 0000), so a page reads about `limit` index entries instead of
 * sorting every match. On 1M rows (bench/dashboard-search.ts) a team + status page is a 5-buffer
 * index-only scan: 1.2 ms for the query, 3.8 ms median over HTTP; 11 ms and 22 ms without them.
 */

export interface StaffJobSearch {
  /** One team, or a few when a team name is shared. */
  teamIds?: string[];
  type?: string;
  status?: JobStatus;
  /** created_at >= from */
  from?: Date;
  /** created_at < to */
  to?: Date;
  limit: number;
  /** Keyset cursor: the exact created_at (microseconds, as text) and id of the previous page's last row. */
  after?: { t: string; id: string };
}

export interface StaffJobListRow {
  id: string;
  teamId: string;
  teamName: string | null;
  type: string;
  queue: string;
  status: JobStatus;
  progressDone: number;
  progressTotal: number | null;
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  errorCode: string | null;
  /** created_at to the microsecond (a JS Date keeps milliseconds), for the cursor. */
  createdAtExact: string;
}

const listColumns = {
  id: jobs.id,
  teamId: jobs.teamId,
  teamName: teams.name,
  type: jobs.type,
  queue: jobs.queue,
  status: jobs.status,
  progressDone: jobs.progressDone,
  progressTotal: jobs.progressTotal,
  attempts: jobs.attempts,
  createdAt: jobs.createdAt,
  startedAt: jobs.startedAt,
  finishedAt: jobs.finishedAt,
  errorCode: sql<string | null>`${jobs.error}->>'code'`,
  createdAtExact: sql<string>`to_char(${jobs.createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
};

export async function searchJobsAllTeams(db: DbOrTx, f: StaffJobSearch): Promise<StaffJobListRow[]> {
  const conds: SQL[] = [];
  if (f.teamIds) {
    if (f.teamIds.length === 0) return [];
    conds.push(f.teamIds.length === 1 ? eq(jobs.teamId, f.teamIds[0]!) : inArray(jobs.teamId, f.teamIds));
  }
  if (f.type) conds.push(eq(jobs.type, f.type));
  if (f.status) conds.push(eq(jobs.status, f.status));
  if (f.from) conds.push(sql`${jobs.createdAt} >= ${f.from.toISOString()}::timestamptz`);
  if (f.to) conds.push(sql`${jobs.createdAt} < ${f.to.toISOString()}::timestamptz`);
  if (f.after) conds.push(sql`(${jobs.createdAt}, ${jobs.id}) < (${f.after.t}::timestamptz, ${f.after.id}::uuid)`);
  return db
    .select(listColumns)
    .from(jobs)
    .leftJoin(teams, eq(teams.id, jobs.teamId))
    .where(conds.length ? and(...conds) : undefined)
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(f.limit);
}

/** One job by id with its team's name, for the search box and the job page. */
export async function getJobForStaff(db: DbOrTx, id: string): Promise<(JobRow & { teamName: string | null }) | undefined> {
  const [row] = await db
    .select({ job: jobs, teamName: teams.name })
    .from(jobs)
    .leftJoin(teams, eq(teams.id, jobs.teamId))
    .where(eq(jobs.id, id));
  return row ? { ...row.job, teamName: row.teamName } : undefined;
}

export async function getStaffJobListRow(db: DbOrTx, id: string): Promise<StaffJobListRow | undefined> {
  const [row] = await db.select(listColumns).from(jobs).leftJoin(teams, eq(teams.id, jobs.teamId)).where(eq(jobs.id, id));
  return row;
}

/** Team ids by exact id or exact name (staff type names; names are not unique). */
export async function findTeamIds(db: DbOrTx, idOrName: string, isUuid: boolean, limit = 20): Promise<string[]> {
  const rows = await db
    .select({ id: teams.id })
    .from(teams)
    .where(isUuid ? sql`${teams.id} = ${idOrName}::uuid or ${teams.name} = ${idOrName}` : eq(teams.name, idOrName))
    .limit(limit);
  return rows.map((r) => r.id);
}

export type JobChunkRow = typeof jobChunks.$inferSelect;

/** A job's committed chunks in order, bounded (the newest `limit` when there are more). */
export async function listJobChunks(db: DbOrTx, jobId: string, limit = 5_000): Promise<JobChunkRow[]> {
  const rows = await db.select().from(jobChunks).where(eq(jobChunks.jobId, jobId)).orderBy(desc(jobChunks.seq)).limit(limit);
  return rows.reverse();
}

export interface JobRunSummary {
  lease: number;
  chunks: number;
  rows: number;
  totalMs: number;
  longestMs: number;
  firstSeq: number;
  lastSeq: number;
  firstAt: Date;
  lastAt: Date;
}

/** Committed chunks grouped by run (lease): a new lease is a retry, a yield's continuation or a takeover. */
export async function summariseJobRuns(db: DbOrTx, jobId: string): Promise<JobRunSummary[]> {
  const rows = await db
    .select({
      lease: jobChunks.lease,
      chunks: sql<number>`count(*)::int`,
      rows: sql<number>`coalesce(sum(${jobChunks.rows}), 0)::bigint`,
      totalMs: sql<number>`coalesce(sum(${jobChunks.durationMs}), 0)::bigint`,
      longestMs: sql<number>`coalesce(max(${jobChunks.durationMs}), 0)::int`,
      firstSeq: sql<number>`min(${jobChunks.seq})::int`,
      lastSeq: sql<number>`max(${jobChunks.seq})::int`,
      firstAt: sql<string>`min(${jobChunks.committedAt})`,
      lastAt: sql<string>`max(${jobChunks.committedAt})`,
    })
    .from(jobChunks)
    .where(eq(jobChunks.jobId, jobId))
    .groupBy(jobChunks.lease)
    .orderBy(asc(sql`min(${jobChunks.seq})`));
  return rows.map((r) => ({
    ...r,
    rows: Number(r.rows),
    totalMs: Number(r.totalMs),
    firstAt: new Date(r.firstAt),
    lastAt: new Date(r.lastAt),
  }));
}

export interface TeamBacklogRow {
  teamId: string;
  teamName: string | null;
  queued: number;
  active: number;
  /** created_at of the team's oldest queued job: its wait is now minus this. */
  oldestQueuedAt: Date | null;
  waitSeconds: number | null;
  maxRunningJobs: number | null;
  maxQueuedJobs: number | null;
}

/**
 * Noisy neighbours: every team with queued or running work right now, the biggest backlog first.
 * Reads only live rows (status queued or active), through the status index.
 */
export async function teamBacklog(db: DbOrTx, limit = 100): Promise<TeamBacklogRow[]> {
  const r = await db.execute<{
    team_id: string;
    team_name: string | null;
    queued: number;
    active: number;
    oldest_queued_at: string | null;
    wait_seconds: number | null;
    max_running_jobs: number | null;
    max_queued_jobs: number | null;
  }>(sql`
    select b.team_id, t.name as team_name, b.queued, b.active, b.oldest_queued_at,
           extract(epoch from now() - b.oldest_queued_at)::float8 as wait_seconds,
           t.max_running_jobs, t.max_queued_jobs
    from (
      select team_id,
             count(*) filter (where status = 'queued')::int as queued,
             count(*) filter (where status = 'active')::int as active,
             min(created_at) filter (where status = 'queued') as oldest_queued_at
      from jobs
      where status in ('queued', 'active')
      group by team_id
    ) b
    left join teams t on t.id = b.team_id
    order by b.queued desc, b.active desc, b.oldest_queued_at asc nulls last
    limit ${limit}`);
  return r.rows.map((x) => ({
    teamId: x.team_id,
    teamName: x.team_name,
    queued: x.queued,
    active: x.active,
    oldestQueuedAt: x.oldest_queued_at ? new Date(x.oldest_queued_at) : null,
    waitSeconds: x.wait_seconds === null ? null : Number(x.wait_seconds),
    maxRunningJobs: x.max_running_jobs,
    maxQueuedJobs: x.max_queued_jobs,
  }));
}

/** Failed jobs of a type and/or team, oldest first, for a bounded redrive. */
export async function listFailedJobIds(db: DbOrTx, f: { type?: string; teamIds?: string[]; limit: number }): Promise<string[]> {
  const conds: SQL[] = [eq(jobs.status, 'failed')];
  if (f.type) conds.push(eq(jobs.type, f.type));
  if (f.teamIds) {
    if (f.teamIds.length === 0) return [];
    conds.push(inArray(jobs.teamId, f.teamIds));
  }
  const rows = await db
    .select({ id: jobs.id })
    .from(jobs)
    .where(and(...conds))
    .orderBy(asc(jobs.createdAt), asc(jobs.id))
    .limit(f.limit);
  return rows.map((r) => r.id);
}

/** How many failed jobs a redrive filter matches, counted up to `cap` (so a huge match stays cheap). */
export async function countFailedJobs(db: DbOrTx, f: { type?: string; teamIds?: string[]; cap: number }): Promise<number> {
  const conds: SQL[] = [sql`status = 'failed'`];
  if (f.type) conds.push(sql`type = ${f.type}`);
  if (f.teamIds) {
    if (f.teamIds.length === 0) return 0;
    conds.push(sql`team_id = any(${sql.param(f.teamIds)}::uuid[])`);
  }
  const r = await db.execute<{ n: number }>(
    sql`select count(*)::int as n from (select 1 from jobs where ${sql.join(conds, sql` and `)} limit ${f.cap}) x`,
  );
  return r.rows[0]?.n ?? 0;
}

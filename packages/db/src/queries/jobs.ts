import { and, desc, eq, inArray, lt, or, sql } from 'drizzle-orm';
import type { Db, DbOrTx } from '../client';
import { jobs, type JobErrorInfo, type JobStatus } from '../schema/index';

export type JobRow = typeof jobs.$inferSelect;
export type NewJobRow = typeof jobs.$inferInsert;

export const ACTIVE_STATUSES: JobStatus[] = ['queued', 'active'];
export const ENDED_STATUSES: JobStatus[] = ['completed', 'failed', 'cancelled'];

export async function insertJob(db: DbOrTx, row: NewJobRow): Promise<JobRow> {
  const [created] = await db.insert(jobs).values(row).returning();
  return created!;
}

export async function getJob(db: DbOrTx, id: string, teamId?: string): Promise<JobRow | undefined> {
  const [row] = await db
    .select()
    .from(jobs)
    .where(teamId ? and(eq(jobs.id, id), eq(jobs.teamId, teamId)) : eq(jobs.id, id));
  return row;
}

export interface JobListFilter {
  teamId: string;
  status?: JobStatus;
  type?: string;
  limit: number;
  /** Keyset cursor: the (createdAt, id) of the last row of the previous page. */
  after?: { createdAt: Date; id: string };
}

export async function listJobs(db: DbOrTx, f: JobListFilter): Promise<JobRow[]> {
  const conds = [eq(jobs.teamId, f.teamId)];
  if (f.status) conds.push(eq(jobs.status, f.status));
  if (f.type) conds.push(eq(jobs.type, f.type));
  if (f.after) {
    conds.push(
      or(
        lt(jobs.createdAt, f.after.createdAt),
        and(eq(jobs.createdAt, f.after.createdAt), lt(jobs.id, f.after.id)),
      )!,
    );
  }
  return db
    .select()
    .from(jobs)
    .where(and(...conds))
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(f.limit);
}

export type ClaimResult =
  | { kind: 'claimed'; job: JobRow }
  | { kind: 'blocked'; by: string }
  | { kind: 'ended'; job: JobRow }
  | { kind: 'missing' };

/**
 * Starts a run of a job: increments its lease (the fencing token of this run) and marks it active.
 * Jobs that write the same resources run one at a time in the order they were accepted: the claim
 * serialises on advisory locks of the job's lock keys and refuses while another job holding one of
 * them is active, or (for a job not yet started) while an earlier accepted one is still queued.
 */
export async function claimJob(
  db: Db,
  id: string,
  owner: string,
  limits: { teamMaxRunning?: number } = {},
): Promise<ClaimResult> {
  return db.transaction(async (tx) => {
    const [current] = await tx.select().from(jobs).where(eq(jobs.id, id));
    if (!current) return { kind: 'missing' } as const;
    if (ENDED_STATUSES.includes(current.status)) return { kind: 'ended', job: current } as const;
    const keys = [...current.lockKeys].sort();
    if (keys.length > 0) {
      await tx.execute(
        sql`select pg_advisory_xact_lock(hashtextextended(k, 0)) from unnest(${sql.param(keys)}::text[]) as k order by k`,
      );
      const blocking = await tx.execute<{ id: string }>(sql`
        select id from jobs
        where lock_keys && ${sql.param(keys)}::text[] and id <> ${id}
          and (status = 'active' or (${current.status} = 'queued' and status = 'queued' and seq < ${current.seq}))
        order by seq limit 1`);
      const by = blocking.rows[0];
      if (by) return { kind: 'blocked', by: by.id } as const;
    }
    // The team's running cap (its own override, else the configured default). Running means
    // claimed by a worker now: a job handed back or yielded has no lease owner until reclaimed.
    const capped = await tx.execute<{ running: number; cap: number | null }>(sql`
      select (select count(*)::int from jobs
              where team_id = ${current.teamId} and status = 'active' and lease_owner is not null and id <> ${id}) as running,
             coalesce((select max_running_jobs from teams where id = ${current.teamId}), ${limits.teamMaxRunning ?? 0}) as cap`);
    const cap = capped.rows[0];
    if (cap && cap.cap && cap.cap > 0 && cap.running >= cap.cap) {
      return { kind: 'blocked', by: 'team_running_cap' } as const;
    }
    const [claimed] = await tx
      .update(jobs)
      .set({
        status: 'active',
        lease: sql`${jobs.lease} + 1`,
        leaseOwner: owner,
        startedAt: sql`coalesce(${jobs.startedAt}, now())`,
        updatedAt: sql`now()`,
      })
      .where(and(eq(jobs.id, id), inArray(jobs.status, ACTIVE_STATUSES)))
      .returning();
    if (!claimed) return { kind: 'missing' } as const;
    return { kind: 'claimed', job: claimed } as const;
  });
}

/** Ends a run; guarded by the lease so a stale run cannot end a job another run owns. */
export async function finishJob(
  db: DbOrTx,
  id: string,
  lease: number,
  end:
    | { status: 'completed'; result: unknown }
    | { status: 'failed'; error: JobErrorInfo }
    | { status: 'cancelled' },
  /** The run's last chunk: the row must hold it (none of its commits was lost). */
  chunkSeq?: number,
): Promise<JobRow | undefined> {
  const [row] = await db
    .update(jobs)
    .set({
      status: end.status,
      result: end.status === 'completed' ? end.result : undefined,
      error: end.status === 'failed' ? end.error : undefined,
      finishedAt: sql`now()`,
      updatedAt: sql`now()`,
      leaseOwner: null,
    })
    .where(and(eq(jobs.id, id), eq(jobs.lease, lease), eq(jobs.status, 'active'), chunkSeq === undefined ? undefined : eq(jobs.chunkSeq, chunkSeq)))
    .returning();
  return row;
}

/** A run ended in an error that will be retried: count it (guarded like every run-side write). */
export async function recordRetryableFailure(db: DbOrTx, id: string, lease: number, error: JobErrorInfo): Promise<boolean> {
  const rows = await db
    .update(jobs)
    .set({ attempts: sql`${jobs.attempts} + 1`, error, updatedAt: sql`now()` })
    .where(and(eq(jobs.id, id), eq(jobs.lease, lease), eq(jobs.status, 'active')))
    .returning({ id: jobs.id });
  return rows.length > 0;
}

/** Reserves the next dispatch number: the BullMQ job id of a continuation is `<row id>:<n>`. */
export async function nextDispatch(db: DbOrTx, id: string, guard?: { lease: number }): Promise<number | undefined> {
  const conds = [eq(jobs.id, id)];
  if (guard) conds.push(eq(jobs.lease, guard.lease));
  const [row] = await db
    .update(jobs)
    .set({ dispatches: sql`${jobs.dispatches} + 1`, leaseOwner: null })
    .where(and(...conds))
    .returning({ dispatches: jobs.dispatches });
  return row?.dispatches;
}

/**
 * Cancels a team's job: a queued job ends at once, an active one is asked to stop at its next
 * chunk boundary. Returns undefined when the job is unknown or already ended.
 */
export async function requestCancel(db: DbOrTx, id: string, teamId?: string): Promise<JobRow | undefined> {
  const conds = [eq(jobs.id, id), inArray(jobs.status, ACTIVE_STATUSES)];
  if (teamId) conds.push(eq(jobs.teamId, teamId));
  const [row] = await db
    .update(jobs)
    .set({
      status: sql`case when ${jobs.status} = 'queued' then 'cancelled'::job_status else ${jobs.status} end`,
      finishedAt: sql`case when ${jobs.status} = 'queued' then now() else ${jobs.finishedAt} end`,
      cancelRequestedAt: sql`now()`,
      updatedAt: sql`now()`,
    })
    .where(and(...conds))
    .returning();
  return row;
}

/**
 * Queues a failed or cancelled job again, keeping its checkpoint so it resumes from its last
 * committed chunk. A failed run that is retried counts as an attempt.
 */
export async function requeueJob(db: DbOrTx, id: string, teamId?: string): Promise<JobRow | undefined> {
  const conds = [eq(jobs.id, id), inArray(jobs.status, ['failed', 'cancelled'])];
  if (teamId) conds.push(eq(jobs.teamId, teamId));
  const [row] = await db
    .update(jobs)
    .set({
      attempts: sql`case when ${jobs.status} = 'failed' then ${jobs.attempts} + 1 else ${jobs.attempts} end`,
      status: 'queued',
      error: null,
      finishedAt: null,
      // A retry gets a fresh run-time allowance: the maximum run time counts from its first chunk.
      startedAt: null,
      cancelRequestedAt: null,
      dispatches: sql`${jobs.dispatches} + 1`,
      updatedAt: sql`now()`,
    })
    .where(and(...conds))
    .returning();
  return row;
}

/** Used when the job could not be handed to Redis: the row must not be left looking queued. */
export async function failUnqueued(db: DbOrTx, id: string, error: JobErrorInfo): Promise<void> {
  await db
    .update(jobs)
    .set({ status: 'failed', error, finishedAt: sql`now()`, updatedAt: sql`now()` })
    .where(and(eq(jobs.id, id), eq(jobs.status, 'queued')));
}

/**
 * BullMQ gave up on a delivery (stalled past its limit: the process died mid-run too often).
 * Ends the row as failed, unless a newer dispatch (a hand-back or a retry) has taken over.
 */
export async function failDispatch(db: DbOrTx, id: string, dispatch: number, error: JobErrorInfo): Promise<boolean> {
  const rows = await db
    .update(jobs)
    .set({ status: 'failed', error, finishedAt: sql`now()`, updatedAt: sql`now()`, leaseOwner: null })
    .where(and(eq(jobs.id, id), inArray(jobs.status, ACTIVE_STATUSES), eq(jobs.dispatches, dispatch)))
    .returning({ id: jobs.id });
  return rows.length > 0;
}

/**
 * How many of the team's unfinished jobs in the same queue were accepted before this one: the
 * job's place in its team's own line. Fair interleaving orders the queue by it (see docs/fairness.md).
 */
export async function teamQueueRank(db: DbOrTx, row: { id: string; teamId: string; queue: string; seq: number }): Promise<number> {
  const r = await db.execute<{ n: number }>(sql`
    select count(*)::int as n from jobs
    where team_id = ${row.teamId} and queue = ${row.queue} and status in ('queued', 'active')
      and seq < ${row.seq} and id <> ${row.id}`);
  return r.rows[0]?.n ?? 0;
}

/**
 * The queued jobs that may have been waiting on this one: the next job of each resource it
 * held, and the team's next queued jobs (a running cap). The worker wakes their delayed
 * deliveries at once instead of letting them poll.
 */
export async function waitersOf(
  db: DbOrTx,
  row: { id: string; teamId: string; lockKeys: string[] },
  limit = 4,
): Promise<{ id: string; queue: string; dispatches: number }[]> {
  const r = await db.execute<{ id: string; queue: string; dispatches: number }>(sql`
    (select id, queue, dispatches, seq from jobs
      where status = 'queued' and id <> ${row.id} and lock_keys && ${sql.param(row.lockKeys)}::text[]
      order by seq limit 1)
    union
    (select id, queue, dispatches, seq from jobs
      where status = 'queued' and id <> ${row.id} and team_id = ${row.teamId}
      order by seq limit ${limit})
    order by seq limit ${limit}`);
  return r.rows.map(({ id, queue, dispatches }) => ({ id, queue, dispatches }));
}

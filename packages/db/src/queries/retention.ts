import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';

/**
 * Retention of the history and the dashboard's records. Each call deletes at most `batch` rows
 * in one short statement (no long lock, no huge WAL burst); callers loop until it returns less
 * than `batch`. `for update skip locked` lets two dashboard processes purge side by side.
 */

/**
 * Ended jobs (completed, failed, cancelled) created and finished before `cutoff`, with their
 * chunks and events (foreign keys cascade). Queued and running jobs are kept however old they
 * are. Walks `jobs_created_idx` from the oldest row. The claims table a failed import kept for its
 * retry goes after its job (`dropOrphanClaimTables`).
 */
export async function purgeJobHistory(db: DbOrTx, cutoff: Date, batch = 5_000): Promise<number> {
  const r = await db.execute<{ n: number }>(sql`
    with gone as (
      delete from jobs where id in (
        select id from jobs
        where created_at < ${cutoff.toISOString()}::timestamptz
          and status in ('completed', 'failed', 'cancelled')
          and coalesce(finished_at, created_at) < ${cutoff.toISOString()}::timestamptz
        order by created_at
        limit ${batch}
        for update skip locked
      )
      returning id
    )
    select count(*)::int as n from gone`);
  return r.rows[0]?.n ?? 0;
}

export async function purgeAuditLog(db: DbOrTx, cutoff: Date, batch = 5_000): Promise<number> {
  const r = await db.execute(sql`
    delete from audit_log where id in (
      select id from audit_log where at < ${cutoff.toISOString()}::timestamptz order by at limit ${batch} for update skip locked
    )`);
  return r.rowCount ?? 0;
}

export async function purgeQueueSamples(db: DbOrTx, cutoff: Date): Promise<number> {
  const r = await db.execute(sql`delete from queue_samples where at < ${cutoff.toISOString()}::timestamptz`);
  return r.rowCount ?? 0;
}

import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { queueSamples } from '../schema/index';

export type QueueSampleRow = typeof queueSamples.$inferSelect;
export type NewQueueSample = typeof queueSamples.$inferInsert;

/**
 * Writes one sample per queue. `at` is aligned to the step by the caller, so two dashboard
 * processes sampling the same interval write one row: the second insert does nothing.
 */
export async function recordQueueSamples(db: DbOrTx, rows: NewQueueSample[]): Promise<number> {
  if (rows.length === 0) return 0;
  const inserted = await db.insert(queueSamples).values(rows).onConflictDoNothing().returning({ queue: queueSamples.queue });
  return inserted.length;
}

/** Jobs of the history that ended completed or failed within (from, to], per queue. */
export async function countEndedJobsByQueue(
  db: DbOrTx,
  from: Date,
  to: Date,
): Promise<Map<string, { completed: number; failed: number }>> {
  const r = await db.execute<{ queue: string; completed: number; failed: number }>(sql`
    select queue,
           count(*) filter (where status = 'completed')::int as completed,
           count(*) filter (where status = 'failed')::int as failed
    from jobs
    where finished_at > ${from.toISOString()}::timestamptz and finished_at <= ${to.toISOString()}::timestamptz
    group by queue`);
  return new Map(r.rows.map((x) => [x.queue, { completed: x.completed, failed: x.failed }]));
}

/**
 * Averages the finer samples at or before `cutoff` into `toStepS`-second rows (depths weighted by
 * the time each covers, counts summed) and deletes them, in one statement. `cutoff` must be
 * aligned to `toStepS`: then every bucket it folds is complete (a row at `at` goes to the bucket
 * ending at ceil(at / toStepS) * toStepS <= cutoff), and a later call never sees a finer row of a
 * bucket already written. Returns the rows written.
 */
export async function downsampleQueueSamples(db: DbOrTx, cutoff: Date, opts: { toStepS: number }): Promise<number> {
  const r = await db.execute<{ n: number }>(sql`
    with moved as (
      delete from queue_samples
      where step_s < ${opts.toStepS} and at <= ${cutoff.toISOString()}::timestamptz
      returning *
    ), ins as (
      insert into queue_samples (queue, step_s, at, waiting, active, delayed, failed, completed_count, failed_count)
      select queue, ${opts.toStepS}::int,
             to_timestamp(ceil(extract(epoch from at) / ${opts.toStepS}) * ${opts.toStepS}),
             sum(waiting * step_s) / sum(step_s), sum(active * step_s) / sum(step_s),
             sum(delayed * step_s) / sum(step_s), sum(failed * step_s) / sum(step_s),
             sum(completed_count), sum(failed_count)
      from moved
      group by 1, 3
      on conflict (queue, step_s, at) do nothing
      returning 1
    )
    select count(*)::int as n from ins`);
  return r.rows[0]?.n ?? 0;
}

export interface QueueSeriesPoint {
  queue: string;
  /** End of the bucket. */
  at: Date;
  waiting: number;
  active: number;
  delayed: number;
  failed: number;
  completedCount: number;
  failedCount: number;
  /** Seconds of the bucket that samples cover (a gap in sampling covers less). */
  coveredS: number;
}

/**
 * Samples in (from, to], bucketed to `stepS` seconds per queue: depths averaged over time, counts
 * summed. Raw and downsampled rows never overlap (downsampling deletes what it folds), so both
 * resolutions are read together.
 */
export async function queueSeries(db: DbOrTx, from: Date, to: Date, stepS: number): Promise<QueueSeriesPoint[]> {
  const r = await db.execute<{
    queue: string;
    t: string;
    waiting: number;
    active: number;
    delayed: number;
    failed: number;
    completed: number;
    failed_count: number;
    covered: number;
  }>(sql`
    select queue,
           to_timestamp(ceil(extract(epoch from at) / ${stepS}) * ${stepS}) as t,
           (sum(waiting * step_s) / sum(step_s))::float8 as waiting,
           (sum(active * step_s) / sum(step_s))::float8 as active,
           (sum(delayed * step_s) / sum(step_s))::float8 as delayed,
           (sum(failed * step_s) / sum(step_s))::float8 as failed,
           sum(completed_count)::int as completed,
           sum(failed_count)::int as failed_count,
           sum(step_s)::int as covered
    from queue_samples
    where at > ${from.toISOString()}::timestamptz and at <= ${to.toISOString()}::timestamptz
    group by 1, 2
    order by 2, 1`);
  return r.rows.map((x) => ({
    queue: x.queue,
    at: new Date(x.t),
    waiting: Number(x.waiting),
    active: Number(x.active),
    delayed: Number(x.delayed),
    failed: Number(x.failed),
    completedCount: x.completed,
    failedCount: x.failed_count,
    coveredS: x.covered,
  }));
}

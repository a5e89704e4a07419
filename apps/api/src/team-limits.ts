import { sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';
import type { DbOrTx } from '@platform/db';
import { AppError } from './errors';

/**
 * Per-team admission limits on the enqueue routes (ARCHITECTURE invariant 6). Every token of a
 * team shares them; the answer past either is 429 with Retry-After, in the one error shape.
 */

/** A fixed one-minute window per team in Redis, so every API replica counts together. */
export async function checkEnqueueRate(redis: Redis, prefix: string, teamId: string, perMinute: number): Promise<void> {
  if (perMinute <= 0) return;
  const now = Date.now();
  const window = Math.floor(now / 60_000);
  const key = `${prefix}:enqueue-rate:${teamId}:${window}`;
  const [[, count]] = (await redis.multi().incr(key).pexpire(key, 61_000).exec()) as [[unknown, number], unknown];
  if (count > perMinute) {
    const retryAfter = Math.max(1, Math.ceil(((window + 1) * 60_000 - now) / 1000));
    throw new AppError('rate_limited', `this team may enqueue at most ${perMinute} jobs a minute; try again in ${retryAfter} s`, undefined, {
      retryAfterSeconds: retryAfter,
    });
  }
}

/**
 * Refuses a job past the team's queued-jobs cap (its own override, else the configured default).
 * Run inside the transaction that records the job: the advisory lock makes concurrent requests of
 * one team count one after the other, so the cap is exact.
 */
export async function checkQueuedCap(tx: DbOrTx, teamId: string, defaultCap: number): Promise<void> {
  await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${'queued:' + teamId}, 0))`);
  const r = await tx.execute<{ queued: number; cap: number }>(sql`
    select (select count(*)::int from jobs where team_id = ${teamId} and status = 'queued') as queued,
           coalesce((select max_queued_jobs from teams where id = ${teamId}), ${defaultCap})::int as cap`);
  const { queued, cap } = r.rows[0]!;
  if (cap > 0 && queued >= cap) {
    throw new AppError('rate_limited', `this team already has ${queued} queued jobs, its limit; try again when some have started`, undefined, {
      retryAfterSeconds: 10,
    });
  }
}

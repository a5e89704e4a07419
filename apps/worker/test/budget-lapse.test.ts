import os from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { waitFor } from '../../../test/helpers';
import { openTeamWorld, type TeamWorld } from './support';

/**
 * Issue 4 (the connection budget): a worker whose lease lapsed (paused past its TTL: a long GC, a
 * frozen VM) and whose share others took gives the connections back when it resumes, instead of
 * keeping its old pool. Real worker runtime, Redis and PostgreSQL; the lapse is made in Redis.
 */
let world: TeamWorld;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  world = await openTeamWorld('budget');
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
});
afterAll(async () => {
  await world?.close();
});

/** Bulk writes of `ops` operations on `n` tables of their own (so they may run at once). */
async function submit(n: number, ops: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(await world.bulkWrite(ops));
  return ids;
}

const completed = async (ids: string[]) =>
  (await world.t.database.pool.query(`select count(*)::int as n from jobs where id = any($1) and status = 'completed'`, [ids])).rows[0].n === ids.length;

/** Connections the worker runtime holds to this file's database. */
const workerConnections = async () =>
  (await world.t.database.pool.query(`select count(*)::int as n from pg_stat_activity where application_name = 'worker' and datname = current_database()`)).rows[0].n as number;

describe('the connection budget when a worker’s lease lapsed', () => {
  it('a worker resumed after others took its share gives its connections back and runs nothing until a share frees, then runs again', async () => {
    const holders = `${world.t.queuePrefix}:db-budget:holders`;
    const expiry = `${world.t.queuePrefix}:db-budget:expiry`;
    worker = await startWorker(
      loadConfig({ ...world.t.env, WORKER_PORT: '0', WORKER_CONCURRENCY: '3', WORKER_DB_BUDGET: '4', WORKER_DB_BUDGET_TTL_MS: '1500', WORKER_CHUNK_SIZE: '100' }),
      pino({ level: 'error' }),
    );
    const me = `${os.hostname()}:${process.pid}`;
    expect(Number(await world.redis.hget(holders, me))).toBe(4);

    const first = await submit(3, 1_500);
    let before = 0;
    await waitFor(async () => {
      before = Math.max(before, await workerConnections());
      return completed(first);
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the first jobs to complete' });
    expect(before).toBeGreaterThanOrEqual(3);

    // The lapse: this worker's lease is gone and another holder took the whole budget.
    await world.redis.multi().hdel(holders, me).zrem(expiry, me).hset(holders, 'another-worker', '4').zadd(expiry, '9999999999999', 'another-worker').exec();
    await waitFor(async () => (await workerConnections()) === 0, { timeoutMs: 10_000, intervalMs: 50, what: 'the worker to give its connections back' });

    // With no share it runs nothing: the jobs wait for a worker that has one.
    const second = await submit(3, 500);
    let without = 0;
    const until = Date.now() + 3_000;
    while (Date.now() < until) {
      without = Math.max(without, await workerConnections());
      await new Promise((r) => setTimeout(r, 50));
    }
    const ran = await world.t.database.pool.query(`select count(*)::int as n from jobs where id = any($1) and status <> 'queued'`, [second]);
    expect(ran.rows[0].n).toBe(0);

    // The other holder goes away: the share comes back and the jobs run here.
    await world.redis.multi().hdel(holders, 'another-worker').zrem(expiry, 'another-worker').exec();
    let after = 0;
    await waitFor(async () => {
      after = Math.max(after, await workerConnections());
      return completed(second);
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the second jobs to complete once the share is back' });
    console.log(`budget lapse: the worker held up to ${before} connections with its share, up to ${without} without one (3 s), up to ${after} once it was back`);
    expect(without).toBeLessThanOrEqual(1);
    expect(after).toBeLessThanOrEqual(4);
    expect(Number(await world.redis.hget(holders, me))).toBe(4);
  }, 90_000);
});

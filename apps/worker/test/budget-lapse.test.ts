import os from 'node:os';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { createRedis, waitReady } from '@platform/jobs';
import type { Redis } from 'ioredis';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

/**
 * Issue 4 (the connection budget): a worker whose lease lapsed (paused past its TTL: a long GC, a
 * frozen VM) and whose share others took gives the connections back when it resumes, instead of
 * keeping its old pool. Real worker runtime, Redis and PostgreSQL; the lapse is made in Redis.
 */
let t: TestEnv;
let api: FastifyInstance;
let redis: Redis;
let worker: WorkerRuntime | undefined;
let token: string;
let projectId: string;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  redis = createRedis(t.redisUrl, 'producer');
  await waitReady(redis);
  token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'budget' } })).json().token;
  projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
});
afterAll(async () => {
  redis?.disconnect();
  await api?.close();
  await t?.cleanup();
});

/** Bulk writes of `ops` operations on `n` tables of their own (so they may run at once). */
async function submit(n: number, ops: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const tableId = (
      await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/cms-tables`, headers: bearer(token), payload: { name: `t${i}`, fields: [{ name: 'n', type: 'number' }] } })
    ).json().id;
    const operations = Array.from({ length: ops }, (_, k) => ({ op: 'insert', data: { n: k } }));
    const r = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect(r.statusCode, r.body).toBe(202);
    ids.push(r.json().id);
  }
  return ids;
}

const completed = async (ids: string[]) =>
  (await t.database.pool.query(`select count(*)::int as n from jobs where id = any($1) and status = 'completed'`, [ids])).rows[0].n === ids.length;

/** Connections the worker runtime holds to this file's database. */
const workerConnections = async () =>
  (await t.database.pool.query(`select count(*)::int as n from pg_stat_activity where application_name = 'worker' and datname = current_database()`)).rows[0].n as number;

describe('the connection budget when a worker’s lease lapsed', () => {
  it('a worker resumed after others took its share gives its connections back and runs nothing until a share frees, then runs again', async () => {
    const holders = `${t.queuePrefix}:db-budget:holders`;
    const expiry = `${t.queuePrefix}:db-budget:expiry`;
    worker = await startWorker(
      loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CONCURRENCY: '3', WORKER_DB_BUDGET: '4', WORKER_DB_BUDGET_TTL_MS: '1500', WORKER_CHUNK_SIZE: '100' }),
      pino({ level: 'error' }),
    );
    const me = `${os.hostname()}:${process.pid}`;
    expect(Number(await redis.hget(holders, me))).toBe(4);

    const first = await submit(3, 1_500);
    let before = 0;
    await waitFor(async () => {
      before = Math.max(before, await workerConnections());
      return completed(first);
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the first jobs to complete' });
    expect(before).toBeGreaterThanOrEqual(3);

    // The lapse: this worker's lease is gone and another holder took the whole budget.
    await redis.multi().hdel(holders, me).zrem(expiry, me).hset(holders, 'another-worker', '4').zadd(expiry, '9999999999999', 'another-worker').exec();
    await waitFor(async () => (await workerConnections()) === 0, { timeoutMs: 10_000, intervalMs: 50, what: 'the worker to give its connections back' });

    // With no share it runs nothing: the jobs wait for a worker that has one.
    const second = await submit(3, 500);
    let without = 0;
    const until = Date.now() + 3_000;
    while (Date.now() < until) {
      without = Math.max(without, await workerConnections());
      await new Promise((r) => setTimeout(r, 50));
    }
    const ran = await t.database.pool.query(`select count(*)::int as n from jobs where id = any($1) and status <> 'queued'`, [second]);
    expect(ran.rows[0].n).toBe(0);

    // The other holder goes away: the share comes back and the jobs run here.
    await redis.multi().hdel(holders, 'another-worker').zrem(expiry, 'another-worker').exec();
    let after = 0;
    await waitFor(async () => {
      after = Math.max(after, await workerConnections());
      return completed(second);
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the second jobs to complete once the share is back' });
    console.log(`budget lapse: the worker held up to ${before} connections with its share, up to ${without} without one (3 s), up to ${after} once it was back`);
    expect(without).toBeLessThanOrEqual(1);
    expect(after).toBeLessThanOrEqual(4);
    expect(Number(await redis.hget(holders, me))).toBe(4);
  }, 90_000);
});

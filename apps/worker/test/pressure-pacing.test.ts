import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { createRedis, signalPressure, waitReady } from '@platform/jobs';
import type { Redis } from 'ioredis';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

/**
 * Issue 4: workers slow down when the API signals database pressure, and keep slowing down for a
 * while after the signal is gone (WORKER_PRESSURE_MEMORY_MS). Real worker runtime, Redis and
 * PostgreSQL; the API's signal is the Redis key it sets, set here by hand.
 */
const PAUSE_MS = 300;
const CHUNKS = 6;
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
  token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'paced' } })).json().token;
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

const pressureKey = () => `${t.queuePrefix}:db-pressure`;

/** Runs a bulk write of CHUNKS chunks of 100 and returns the gaps between its chunks' starts (ms). */
async function chunkGaps(): Promise<number[]> {
  const tableId = (
    await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/cms-tables`, headers: bearer(token), payload: { name: 't', fields: [{ name: 'n', type: 'number' }] } })
  ).json().id;
  const operations = Array.from({ length: CHUNKS * 100 }, (_, i) => ({ op: 'insert', data: { n: i } }));
  const r = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
  expect(r.statusCode, r.body).toBe(202);
  const id = r.json().id;
  await waitFor(async () => (await t.database.pool.query('select status from jobs where id = $1', [id])).rows[0].status === 'completed', {
    timeoutMs: 30_000,
    what: 'the bulk write to complete',
  });
  // committed_at is the chunk transaction's now(): when it began.
  const chunks = await t.database.pool.query<{ at: Date }>('select committed_at as at from job_chunks where job_id = $1 and rows > 0 order by seq', [id]);
  expect(chunks.rows).toHaveLength(CHUNKS);
  return chunks.rows.slice(1).map((c, i) => c.at.getTime() - chunks.rows[i]!.at.getTime());
}

const run = (memoryMs: number) =>
  startWorker(
    loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '100', WORKER_PRESSURE_PAUSE_MS: String(PAUSE_MS), WORKER_PRESSURE_MEMORY_MS: String(memoryMs) }),
    pino({ level: 'warn' }),
  );

describe('pacing under database pressure', () => {
  it('pauses before every chunk while the API signals pressure, and keeps pausing after the signal is gone', async () => {
    worker = await run(60_000);
    await redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    const signalled = await chunkGaps();
    await redis.del(pressureKey());
    const remembered = await chunkGaps();
    console.log(`pacing: gaps between chunk starts while signalled ${signalled.join(', ')} ms; just after ${remembered.join(', ')} ms`);
    // Each chunk waits the full pause while the key is up…
    expect(Math.min(...signalled)).toBeGreaterThanOrEqual(PAUSE_MS - 20);
    // …and most of it within seconds of the key going (the pause fades over 60 s here).
    expect(Math.min(...remembered)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);

  it('without memory (WORKER_PRESSURE_MEMORY_MS=0) a worker stops pausing once the signal is gone', async () => {
    worker = await run(0);
    await redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    const signalled = await chunkGaps();
    await redis.del(pressureKey());
    await new Promise((r) => setTimeout(r, 200)); // past the worker's 100 ms read interval
    const after = await chunkGaps();
    console.log(`pacing without memory: gaps while signalled ${signalled.join(', ')} ms; after ${after.join(', ')} ms`);
    expect(Math.min(...signalled)).toBeGreaterThanOrEqual(PAUSE_MS - 20);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(after)).toBeLessThan(sum(signalled) / 2);
  }, 60_000);

  it('an idle worker also remembers pressure that came and went between its runs', async () => {
    worker = await run(60_000);
    await redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    await new Promise((r) => setTimeout(r, 1_000)); // no job runs meanwhile
    await redis.del(pressureKey());
    const after = await chunkGaps();
    console.log(`pacing after pressure seen while idle: gaps ${after.join(', ')} ms`);
    expect(Math.min(...after)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);

  it('a worker started after the API signalled pressure (the signal already gone) starts paced', async () => {
    await signalPressure(redis, t.queuePrefix, 'p99:40ms', 200);
    await waitFor(async () => (await redis.exists(pressureKey())) === 0, { timeoutMs: 5_000, intervalMs: 20, what: 'the signal to expire' });
    worker = await run(60_000);
    const first = await chunkGaps();
    console.log(`pacing of a worker started after the signal: gaps ${first.join(', ')} ms`);
    expect(Math.min(...first)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);
});

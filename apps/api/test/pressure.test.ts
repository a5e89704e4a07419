import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { ReadLatencies } from '../src/plugins/pressure';

let t: TestEnv;
let redis: Redis;
let api: FastifyInstance | undefined;

beforeAll(async () => {
  t = await createTestEnv();
  redis = new Redis(t.redisUrl);
});

afterEach(async () => {
  await api?.close();
  api = undefined;
  await redis.del(`${t.queuePrefix}:db-pressure`);
});

afterAll(async () => {
  redis?.disconnect();
  await t?.cleanup();
});

/**
 * 5 rounds of 4 concurrent job reads, each round held up ~80 ms by a lock on the jobs table: slow
 * reads for real, while the API's pool (5 connections) never has a request waiting.
 */
async function slowReads(app: FastifyInstance) {
  const admin = bearer(ADMIN_TOKEN);
  const team = (await app.inject({ method: 'POST', url: '/v1/admin/teams', headers: admin, payload: { name: 'readers' } })).json();
  const job = await app.inject({ method: 'GET', url: '/v1/jobs/01a21d02-b0eb-723d-a4bb-c8808608493a', headers: bearer(team.token) });
  expect(job.statusCode).toBe(404);
  for (let round = 0; round < 5; round++) {
    const locker = await t.database.pool.connect();
    try {
      await locker.query('begin');
      await locker.query('lock table jobs in access exclusive mode');
      const reads = Array.from({ length: 4 }, () =>
        app.inject({ method: 'GET', url: '/v1/jobs/01a21d02-b0eb-723d-a4bb-c8808608493a', headers: bearer(team.token) }),
      );
      await new Promise((r) => setTimeout(r, 80));
      await locker.query('commit');
      for (const r of await Promise.all(reads)) expect(r.statusCode).toBe(404);
    } finally {
      locker.release();
    }
  }
}

describe('database pressure from read latency', () => {
  it('slow reads (p99 over API_PRESSURE_LATENCY_MS) set the pressure key that slows the workers', async () => {
    api = await buildTestApi(t, { API_PRESSURE_LATENCY_MS: '25' });
    await slowReads(api);
    const value = await waitFor(async () => (await redis.get(`${t.queuePrefix}:db-pressure`)) ?? undefined, { timeoutMs: 2_000, what: 'the pressure key' });
    expect(value).toMatch(/^p99:\d+ms$/);
    expect(Number(value.slice(4, -2))).toBeGreaterThanOrEqual(25);
    // When it last happened, by Redis's clock, for workers that start or wake later.
    const [secs] = await redis.time();
    expect(Number(secs) * 1000 - Number(await redis.get(`${t.queuePrefix}:db-pressure:last`))).toBeLessThan(5_000);
  });

  it('with the latency signal off, the same slow reads set nothing (the pool never waited)', async () => {
    api = await buildTestApi(t, { API_PRESSURE_LATENCY_MS: '0' });
    await slowReads(api);
    await new Promise((r) => setTimeout(r, 500));
    expect(await redis.get(`${t.queuePrefix}:db-pressure`)).toBeNull();
  });

  it('the 99th percentile covers the last second only, and needs 20 reads', () => {
    const w = new ReadLatencies(1_000);
    for (let i = 0; i < 19; i++) w.add(100, 0);
    expect(w.p99(10)).toBeUndefined();
    for (let i = 0; i < 81; i++) w.add(1, 500);
    // 100 reads: 81 fast, 19 slow → the 99th percentile is a slow one.
    expect(w.p99(600)).toBe(100);
    // Past a second the slow ones (at 0) drop out; past 1.5 s the fast ones too.
    expect(w.p99(1_200)).toBe(1);
    expect(w.p99(1_600)).toBeUndefined();
    // One outlier among 50 reads is not a slowdown: it takes two.
    const one = new ReadLatencies(1_000);
    for (let i = 0; i < 49; i++) one.add(1, 0);
    one.add(500, 0);
    expect(one.p99(10)).toBe(1);
    one.add(400, 0);
    expect(one.p99(10)).toBe(400);
  });
});

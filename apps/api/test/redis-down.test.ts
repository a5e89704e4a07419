import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { startRedis } from '../../../scripts/lib/services';
import { bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { acceptBulkWrite, buildApiWithEnv, count, createWorkspace, expectError, queuedJob } from './support';

let t: TestEnv;
/** Redis is where nothing listens: every enqueue fails. Postgres is fine. */
let down: FastifyInstance;
let up: FastifyInstance;
let ws: Awaited<ReturnType<typeof createWorkspace>>;

beforeAll(async () => {
  t = await createTestEnv();
  up = await buildTestApi(t);
  down = await buildApiWithEnv(t, { REDIS_URL: 'redis://127.0.0.1:1' });
  ws = await createWorkspace(down);
});

afterAll(async () => {
  await down?.close();
  await up?.close();
  await t?.cleanup();
});

const blobs = () => readdirSync(t.blobDir, { recursive: true }).filter((f) => String(f).endsWith('.ndjson'));

describe('Redis down', () => {
  it('answers a bulk write 503 dependency_unavailable with Retry-After within 1 s, leaving no job behind', async () => {
    const started = Date.now();
    const res = await acceptBulkWrite(down, ws.token, ws.tableId);
    const elapsed = Date.now() - started;
    expectError(res, 503, 'dependency_unavailable');
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
    expect(elapsed).toBeLessThan(1_000);

    const rows = await t.database.pool.query('select status, error from jobs where team_id = $1', [ws.team.id]);
    for (const row of rows.rows) {
      expect(row.status).toBe('failed');
      expect(row.error.code).toBe('dependency_unavailable');
    }
    expect(await count(t.database, `jobs where status = 'queued'`)).toBe(0);
    expect(blobs()).toEqual([]);
  });

  it('answers 503 again and again, quickly, while Redis stays down', async () => {
    for (let i = 0; i < 3; i++) {
      const started = Date.now();
      expectError(await acceptBulkWrite(down, ws.token, ws.tableId), 503, 'dependency_unavailable');
      expect(Date.now() - started).toBeLessThan(1_000);
    }
    expect(await count(t.database, `jobs where status = 'queued'`)).toBe(0);
  });

  it('frees the Idempotency-Key of a refused request, so the retry once Redis is back creates the job', async () => {
    const headers = { 'idempotency-key': 'retry-after-outage' };
    expectError(await acceptBulkWrite(down, ws.token, ws.tableId, undefined, headers), 503, 'dependency_unavailable');
    const later = await acceptBulkWrite(up, ws.token, ws.tableId, undefined, headers);
    expect(later.statusCode, later.body).toBe(202);
    expect(later.json().status).toBe('queued');
  });

  it('answers a retry 503 and ends the job failed with dependency_unavailable, not queued', async () => {
    const job = await queuedJob(up, ws.token, ws.tableId);
    expect((await up.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: bearer(ws.token) })).statusCode).toBe(202);
    const res = await down.inject({ method: 'POST', url: `/v1/jobs/${job.id}/retry`, headers: bearer(ws.token) });
    expectError(res, 503, 'dependency_unavailable');
    expect(res.headers['retry-after']).toBeDefined();
    const row = await up.inject({ method: 'GET', url: `/v1/jobs/${job.id}`, headers: bearer(ws.token) });
    expect(row.json()).toMatchObject({ status: 'failed', error: { code: 'dependency_unavailable' } });
  });

  it('still cancels a queued job (the history row is the record; Redis is tidied best effort)', async () => {
    const job = await queuedJob(up, ws.token, ws.tableId);
    const res = await down.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel`, headers: bearer(ws.token) });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json().status).toBe('cancelled');
  });

  it('answers /readyz 503 in the error shape with Retry-After, and /healthz 200', async () => {
    const ready = await down.inject({ method: 'GET', url: '/readyz' });
    expect(expectError(ready, 503, 'dependency_unavailable').message).toMatch(/Redis/);
    expect(ready.headers['retry-after']).toBeDefined();
    const health = await down.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(200);
  });

  it('answers /readyz 200 when Redis and PostgreSQL answer', async () => {
    const ready = await waitFor(async () => {
      const r = await up.inject({ method: 'GET', url: '/readyz' });
      return r.statusCode === 200 ? r : undefined;
    }, { timeoutMs: 5_000, intervalMs: 50, what: '/readyz to answer 200' });
    expect(ready.json()).toEqual({ status: 'ready' });
  });
});

describe('Redis coming back', () => {
  it('accepts jobs again once Redis is back, also when the first enqueue came during the outage', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'redis-outage-'));
    const redis = await startRedis({ dir, persistent: false });
    const api = await buildApiWithEnv(t, { REDIS_URL: redis.url });
    try {
      const ready = () => api.inject({ method: 'GET', url: '/readyz' }).then((r) => r.statusCode === 200);
      await waitFor(ready, { timeoutMs: 10_000, what: 'the API to see Redis' });
      const { token, tableId } = await createWorkspace(api);

      await redis.stop();
      const refused = await acceptBulkWrite(api, token, tableId);
      expectError(refused, 503, 'dependency_unavailable');

      await redis.restart();
      await waitFor(ready, { timeoutMs: 10_000, what: 'the API to see Redis again' });
      const accepted = await acceptBulkWrite(api, token, tableId);
      expect(accepted.statusCode, accepted.body).toBe(202);
      expect(accepted.json().status).toBe('queued');
    } finally {
      await api.close();
      await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { bulkWriteJob, createQueue, createRedis, waitReady } from '@platform/jobs';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { acceptBulkWrite, count, createWorkspace, expectError } from './support';

let t: TestEnv;
let api: FastifyInstance;
let ws: Awaited<ReturnType<typeof createWorkspace>>;
let redis: ReturnType<typeof createRedis>;
let queue: ReturnType<typeof createQueue>;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  ws = await createWorkspace(api);
  redis = createRedis(t.redisUrl, 'worker');
  await waitReady(redis);
  queue = createQueue(bulkWriteJob.queue, redis, t.queuePrefix);
});

afterAll(async () => {
  await queue?.close();
  redis?.disconnect();
  await api?.close();
  await t?.cleanup();
});

describe('heavy routes: auth, ownership and media types', () => {
  it('checks auth and ownership before accepting anything', async () => {
    const routes = [
      { url: `/v1/cms-tables/${randomUUID()}/imports?format=csv`, headers: { 'content-type': 'text/csv' }, payload: 'title\nx\n' },
      { url: `/v1/cms-tables/${randomUUID()}/exports`, payload: { format: 'csv' } },
      { url: `/v1/projects/${randomUUID()}/publishes`, payload: {} },
    ];
    for (const r of routes) {
      expectError(await api.inject({ method: 'POST', ...r }), 401, 'unauthorized');
      expectError(await api.inject({ method: 'POST', ...r, headers: { ...r.headers, ...bearer(ws.token) } }), 404, 'not_found');
    }
  });

  it('answers 415 to an import whose ?format contradicts its Content-Type, or that is not CSV or NDJSON', async () => {
    const h = bearer(ws.token);
    const contradicts = await api.inject({
      method: 'POST',
      url: `/v1/cms-tables/${ws.tableId}/imports?format=ndjson`,
      headers: { ...h, 'content-type': 'text/csv' },
      payload: 'title\nx\n',
    });
    expectError(contradicts, 415, 'unsupported_media_type');
    for (const type of ['application/json', 'text/plain']) {
      const res = await api.inject({
        method: 'POST',
        url: `/v1/cms-tables/${ws.tableId}/imports`,
        headers: { ...h, 'content-type': type },
        payload: '{"title":"x"}',
      });
      expectError(res, 415, 'unsupported_media_type');
    }
  });
});

describe('bulk writes are accepted as jobs', () => {
  it('answers 202 with the job object, as GET /v1/jobs/:id returns it, and Location: /v1/jobs/:id', async () => {
    const res = await acceptBulkWrite(api, ws.token, ws.tableId, [
      { op: 'insert', identifier: 'a', data: { title: 'A' } },
      { op: 'update', identifier: 'a', data: { title: 'B', views: 2 } },
      { op: 'delete', identifier: 'a' },
    ]);
    expect(res.statusCode, res.body).toBe(202);
    const job = res.json();
    expect(res.headers.location).toBe(`/v1/jobs/${job.id}`);
    expect(job).toMatchObject({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      type: 'cms.bulk_write',
      status: 'queued',
      progress: { done: 0, total: 3 },
      attempts: 0,
      createdAt: expect.stringMatching(/Z$/),
      startedAt: null,
      finishedAt: null,
      result: null,
      error: null,
    });
    const got = await api.inject({ method: 'GET', url: res.headers.location as string, headers: bearer(ws.token) });
    expect(got.statusCode).toBe(200);
    expect(got.json()).toEqual(job);
  });

  it('stores the operations in the blob dir and puts only a small envelope in Redis', async () => {
    const marker = `marker-${randomUUID()}`;
    const operations = Array.from({ length: 2_000 }, (_, i) => ({
      op: 'insert',
      identifier: `row-${i}`,
      data: { title: `${marker} ${'x'.repeat(100)} ${i}` },
    }));
    const res = await acceptBulkWrite(api, ws.token, ws.tableId, operations);
    expect(res.statusCode, res.body).toBe(202);
    const jobId = res.json().id;

    const files = readdirSync(t.blobDir, { recursive: true }).map(String);
    const blob = files.find((f) => f.includes(jobId));
    expect(blob, files.join(', ')).toBeDefined();
    const lines = readFileSync(path.join(t.blobDir, blob!), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(2_000);
    expect(JSON.parse(lines[1_999]!)).toEqual(operations[1_999]);

    const bullJobs = await queue.getJobs(['waiting', 'delayed', 'prioritized', 'wait']);
    const mine = bullJobs.filter((j) => (j.data as { jobId?: string }).jobId === jobId);
    expect(mine).toHaveLength(1);
    const envelope = JSON.stringify(mine[0]!.data);
    expect(envelope).not.toContain(marker);
    expect(Buffer.byteLength(envelope)).toBeLessThan(1_000);
    expect(mine[0]!.data).toMatchObject({ jobId, teamId: ws.team.id, type: 'cms.bulk_write', payload: { tableId: ws.tableId, operationCount: 2_000 } });

    // Nothing of the operations anywhere in this test's Redis keys either.
    const keys = await redis.keys(`${t.queuePrefix}:*`);
    for (const key of keys) {
      if ((await redis.type(key)) !== 'hash') continue;
      const values = Object.values(await redis.hgetall(key)).join('\n');
      expect(values).not.toContain(marker);
    }
  });

  it('refuses more than 100,000 operations (400) and queues nothing', async () => {
    const before = await count(t.database, 'jobs');
    const operations = Array.from({ length: 100_001 }, () => ({ op: 'delete', identifier: 'a' }));
    const res = await acceptBulkWrite(api, ws.token, ws.tableId, operations);
    expectError(res, 400, 'validation_failed');
    expect(await count(t.database, 'jobs')).toBe(before);
  });

  it('refuses a malformed operation (400 with details) and queues nothing', async () => {
    const before = await count(t.database, 'jobs');
    const malformed = [
      { op: 'update', id: randomUUID(), identifier: 'a', data: { title: 'x' } },
      { op: 'update', data: { title: 'x' } },
      { op: 'delete' },
      { op: 'delete', id: 'not-a-uuid' },
      { op: 'upsert', identifier: 'a', data: {} },
      { op: 'insert', identifier: '', data: { title: 'x' } },
      { op: 'insert', data: 'not an object' },
      { op: 'insert', data: { title: 'x' }, extra: 1 },
    ];
    for (const op of malformed) {
      const res = await acceptBulkWrite(api, ws.token, ws.tableId, [{ op: 'insert', data: { title: 'fine' } }, op]);
      const err = expectError(res, 400, 'validation_failed');
      expect(err.details, JSON.stringify(op)).toEqual(expect.arrayContaining([expect.objectContaining({ message: expect.any(String) })]));
    }
    expectError(await acceptBulkWrite(api, ws.token, ws.tableId, []), 400, 'validation_failed');
    expect(await count(t.database, 'jobs')).toBe(before);
  });
});

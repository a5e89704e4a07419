import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { bullJobId, bulkWriteJob, createQueue, createRedis, waitReady } from '@platform/jobs';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { createWorkspace, expectError, queuedJob } from './support';

let t: TestEnv;
let api: FastifyInstance;
let redis: ReturnType<typeof createRedis>;
let queue: ReturnType<typeof createQueue>;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
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

type JobBody = { id: string; type: string; status: string; createdAt: string; [k: string]: unknown };

async function listAll(token: string, query: string, limit: number): Promise<JobBody[][]> {
  const pages: JobBody[][] = [];
  let cursor: string | null = null;
  do {
    const res: LightMyRequestResponse = await api.inject({
      method: 'GET',
      url: `/v1/jobs?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
      headers: bearer(token),
    });
    expect(res.statusCode, res.body).toBe(200);
    expect(Object.keys(res.json()).sort()).toEqual(['jobs', 'nextCursor']);
    pages.push(res.json().jobs);
    cursor = res.json().nextCursor;
    expect(pages.length).toBeLessThan(50);
  } while (cursor);
  return pages;
}

/** Job rows written straight to the history table, with chosen types, states and times. */
async function insertJobs(teamId: string, rows: { type?: string; status?: string; createdAt: string }[]): Promise<string[]> {
  const ids: string[] = [];
  for (const r of rows) {
    const id = randomUUID();
    ids.push(id);
    await t.database.pool.query(
      `insert into jobs (id, team_id, type, queue, status, payload, created_at) values ($1, $2, $3, 'q', $4, '{}', $5)`,
      [id, teamId, r.type ?? 'cms.export', r.status ?? 'completed', r.createdAt],
    );
  }
  return ids;
}

describe('GET /v1/jobs', () => {
  let ws: Awaited<ReturnType<typeof createWorkspace>>;
  let accepted: string[];

  beforeAll(async () => {
    ws = await createWorkspace(api, 'lister');
    accepted = [];
    for (let i = 0; i < 5; i++) accepted.push((await queuedJob(api, ws.token, ws.tableId)).id);
    await api.inject({ method: 'POST', url: `/v1/jobs/${accepted[1]}/cancel`, headers: bearer(ws.token) });
    await api.inject({ method: 'POST', url: `/v1/jobs/${accepted[3]}/cancel`, headers: bearer(ws.token) });
  });

  it('lists newest first, across pages, with nextCursor null at the end', async () => {
    const pages = await listAll(ws.token, '', 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat().map((j) => j.id)).toEqual([...accepted].reverse());
    const one = await api.inject({ method: 'GET', url: '/v1/jobs', headers: bearer(ws.token) });
    expect(one.json().nextCursor).toBeNull();
    expect(one.json().jobs[0]).toMatchObject({ id: accepted[4], type: 'cms.bulk_write', status: 'queued' });
  });

  it('filters by status and by type', async () => {
    const cancelled = (await listAll(ws.token, '&status=cancelled', 1)).flat();
    expect(cancelled.map((j) => j.id)).toEqual([accepted[3], accepted[1]]);
    const queued = (await listAll(ws.token, '&status=queued&type=cms.bulk_write', 500)).flat();
    expect(queued.map((j) => j.id)).toEqual([accepted[4], accepted[2], accepted[0]]);
    expect((await listAll(ws.token, '&type=cms.import', 500)).flat()).toEqual([]);
  });

  it('refuses an unknown status or type, a bad limit and a cursor it did not give out (400)', async () => {
    for (const q of ['status=done', 'type=cms.nope', 'limit=0', 'limit=501', 'cursor=garbage', `cursor=${Buffer.from('{"t":"x","id":"y"}').toString('base64url')}`,
      `cursor=${Buffer.from(JSON.stringify({ t: '2024-02-30T00:00:00Z', id: randomUUID() })).toString('base64url')}`,
      `cursor=${Buffer.from(JSON.stringify({ t: 'Tue May 01 2024', id: randomUUID() })).toString('base64url')}`,
    ]) {
      expectError(await api.inject({ method: 'GET', url: `/v1/jobs?${q}`, headers: bearer(ws.token) }), 400, 'validation_failed');
    }
  });

  it('pages through jobs created within the same millisecond without skipping or repeating any', async () => {
    const team = await createWorkspace(api, 'same-ms');
    // Microseconds apart, in one millisecond: a cursor that keeps only milliseconds loses them.
    const ids = await insertJobs(team.team.id, [
      { createdAt: '2024-05-01T10:00:00.123100Z' },
      { createdAt: '2024-05-01T10:00:00.123200Z' },
      { createdAt: '2024-05-01T10:00:00.123300Z' },
      { createdAt: '2024-05-01T10:00:00.123300Z' },
      { createdAt: '2024-05-01T10:00:00.123900Z' },
      { createdAt: '2024-05-01T10:00:00.122000Z' },
    ]);
    const tied = [ids[2]!, ids[3]!].sort().reverse();
    const expected = [ids[4], ...tied, ids[1], ids[0], ids[5]];
    for (const limit of [1, 2, 4]) {
      const got = (await listAll(team.token, '', limit)).flat().map((j) => j.id);
      expect(got, `limit=${limit}`).toEqual(expected);
    }
    const completed = (await listAll(team.token, '&status=completed&type=cms.export', 1)).flat().map((j) => j.id);
    expect(completed).toEqual(expected);
  });
});

describe('one job', () => {
  let ws: Awaited<ReturnType<typeof createWorkspace>>;

  beforeAll(async () => {
    ws = await createWorkspace(api, 'one-job');
  });

  const call = (method: 'GET' | 'POST', url: string) => api.inject({ method, url, headers: bearer(ws.token) });

  it('answers 404 to an unknown or malformed job id on every job route', async () => {
    for (const id of [randomUUID(), 'nope']) {
      expectError(await call('GET', `/v1/jobs/${id}`), 404, 'not_found');
      expectError(await call('POST', `/v1/jobs/${id}/cancel`), 404, 'not_found');
      expectError(await call('POST', `/v1/jobs/${id}/retry`), 404, 'not_found');
      expectError(await call('GET', `/v1/jobs/${id}/download`), 404, 'not_found');
    }
  });

  it('cancels a queued job at once (202, cancelled), then answers a second cancel 409', async () => {
    const job = await queuedJob(api, ws.token, ws.tableId);
    expect(await queue.getJob(bullJobId(job.id, 0))).toBeDefined();
    const res = await call('POST', `/v1/jobs/${job.id}/cancel`);
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ id: job.id, status: 'cancelled', finishedAt: expect.any(String), error: null });
    expect((await call('GET', `/v1/jobs/${job.id}`)).json().status).toBe('cancelled');
    // The queued BullMQ job is tidied away (the worker would skip the cancelled row anyway).
    expect(await queue.getJob(bullJobId(job.id, 0))).toBeUndefined();

    expectError(await call('POST', `/v1/jobs/${job.id}/cancel`), 409, 'conflict');
  });

  it('retries a cancelled job (202, queued again, enqueued again), then answers a retry of the queued job 409', async () => {
    const job = await queuedJob(api, ws.token, ws.tableId);
    await call('POST', `/v1/jobs/${job.id}/cancel`);
    const res = await call('POST', `/v1/jobs/${job.id}/retry`);
    expect(res.statusCode, res.body).toBe(202);
    expect(res.headers.location).toBe(`/v1/jobs/${job.id}`);
    expect(res.json()).toMatchObject({ id: job.id, status: 'queued', finishedAt: null, error: null, attempts: 0 });
    const redelivery = await queue.getJob(bullJobId(job.id, 1));
    expect(redelivery?.data).toMatchObject({ jobId: job.id });

    expectError(await call('POST', `/v1/jobs/${job.id}/retry`), 409, 'conflict');
    // And it can be cancelled again.
    expect((await call('POST', `/v1/jobs/${job.id}/cancel`)).json().status).toBe('cancelled');
  });

  it('retries a failed job, counting the failed run as an attempt', async () => {
    const [id] = await insertJobs(ws.team.id, [{ type: 'cms.bulk_write', status: 'failed', createdAt: new Date().toISOString() }]);
    const payload = { tableId: ws.tableId, blobKey: 'bulk/x.ndjson', operationCount: 1 };
    await t.database.pool.query(`update jobs set payload = $2, queue = $3, error = '{"code":"internal","message":"boom"}' where id = $1`, [
      id,
      JSON.stringify(payload),
      bulkWriteJob.queue,
    ]);
    const res = await call('POST', `/v1/jobs/${id}/retry`);
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ status: 'queued', attempts: 1, error: null });
  });

  it('answers 409 to a cancel or retry of a completed job', async () => {
    const [id] = await insertJobs(ws.team.id, [{ type: 'cms.bulk_write', status: 'completed', createdAt: new Date().toISOString() }]);
    expectError(await call('POST', `/v1/jobs/${id}/cancel`), 409, 'conflict');
    expectError(await call('POST', `/v1/jobs/${id}/retry`), 409, 'conflict');
  });

  it('answers 409 to the download of a job that is not an export, or of an export not completed', async () => {
    const job = await queuedJob(api, ws.token, ws.tableId);
    expectError(await call('GET', `/v1/jobs/${job.id}/download`), 409, 'conflict');
    const [exportId] = await insertJobs(ws.team.id, [{ type: 'cms.export', status: 'active', createdAt: new Date().toISOString() }]);
    expectError(await call('GET', `/v1/jobs/${exportId}/download`), 409, 'conflict');
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { loadConfig } from '../../worker/src/config';
import { startWorker, type WorkerRuntime } from '../../worker/src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime;
let token: string;
let tableId: string;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  worker = await startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '100' }), pino({ level: 'warn' }));
  const team = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'acme' } });
  token = team.json().token;
  const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'site' } });
  const table = await api.inject({
    method: 'POST',
    url: `/v1/projects/${project.json().id}/cms-tables`,
    headers: bearer(token),
    payload: { name: 'posts', fields: [{ name: 'title', type: 'text', required: true }, { name: 'views', type: 'number' }] },
  });
  expect(table.statusCode).toBe(201);
  tableId = table.json().id;
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

async function finished(jobId: string) {
  return waitFor(async () => {
    const r = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}`, headers: bearer(token) });
    const j = r.json();
    return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
  }, { what: `job ${jobId} to end` });
}

describe('bulk writes end to end', () => {
  it('applies inserts, updates and deletes in order and reports progress by operation', async () => {
    const operations = [
      ...Array.from({ length: 250 }, (_, i) => ({ op: 'insert', identifier: `p${i}`, data: { title: `Post ${i}`, views: i } })),
      { op: 'update', identifier: 'p1', data: { title: 'Changed' } },
      { op: 'delete', identifier: 'p2' },
      { op: 'insert', identifier: 'p2', data: { title: 'Again' } },
      { op: 'update', identifier: 'p2', data: { title: 'Again, edited' } },
    ];
    const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect(res.statusCode).toBe(202);
    expect(res.headers.location).toBe(`/v1/jobs/${res.json().id}`);
    expect(res.json()).toMatchObject({ type: 'cms.bulk_write', status: 'queued', progress: { done: 0, total: 254 } });
    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    expect(job.progress).toEqual({ done: 254, total: 254 });
    expect(job.result).toEqual({ inserted: 251, updated: 2, deleted: 1 });

    const all: { identifier: string; draftData: { title: string } }[] = [];
    let cursor: string | null = null;
    do {
      const page: Awaited<ReturnType<typeof api.inject>> = await api.inject({
        method: 'GET',
        url: `/v1/cms-tables/${tableId}/rows?limit=100${cursor ? `&cursor=${cursor}` : ''}`,
        headers: bearer(token),
      });
      all.push(...page.json().rows);
      cursor = page.json().nextCursor;
    } while (cursor);
    expect(all).toHaveLength(250);
    const byIdent = new Map(all.map((r) => [r.identifier, r.draftData.title]));
    expect(byIdent.get('p1')).toBe('Changed');
    expect(byIdent.get('p2')).toBe('Again, edited');
    expect(byIdent.get('p249')).toBe('Post 249');
  });

  it('fails without writing anything when an operation is invalid against the table state', async () => {
    const before = await t.database.pool.query('select count(*)::int as n from cms_rows');
    const operations = [
      { op: 'insert', identifier: 'fresh-1', data: { title: 'ok' } },
      { op: 'insert', identifier: 'p10', data: { title: 'exists already' } },
      { op: 'update', identifier: 'nope', data: { title: 'x' } },
      { op: 'delete', identifier: 'fresh-1' },
      { op: 'delete', identifier: 'fresh-1' },
    ];
    const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect(res.statusCode).toBe(202);
    const job = await finished(res.json().id);
    expect(job.status).toBe('failed');
    expect(job.attempts).toBe(0);
    expect(job.error.code).toBe('validation_failed');
    expect(job.error.details.map((d: { index: number }) => d.index)).toEqual([1, 2, 4]);
    const after = await t.database.pool.query('select count(*)::int as n from cms_rows');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('refuses row data that does not fit the fields before queuing anything', async () => {
    const res = await api.inject({
      method: 'POST',
      url: `/v1/cms-tables/${tableId}/bulk-writes`,
      headers: bearer(token),
      payload: { operations: [{ op: 'insert', data: { title: 5 } }, { op: 'insert', data: { views: 'many' } }] },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe('validation_failed');
    expect(res.json().error.details).toEqual([
      { index: 0, field: 'title', message: 'title: must be a string' },
      { index: 1, field: 'title', message: 'title: is required' },
      { index: 1, field: 'views', message: 'views: must be a finite number' },
    ]);
    const jobs = await t.database.pool.query('select count(*)::int as n from jobs where status = $1', ['queued']);
    expect(jobs.rows[0].n).toBe(0);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

const jobOf = async (token: string, id: string) => (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();

describe('maximum run time', () => {
  it('fails a job past its run time with a timeout, keeping its committed chunks; a retry resumes and ends exact', async () => {
    const token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'slow' } })).json().token;
    const projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
    const tableId = (
      await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/cms-tables`, headers: bearer(token), payload: { name: 't', fields: [{ name: 'n', type: 'number' }] } })
    ).json().id;
    const operations = Array.from({ length: 100_000 }, (_, i) => ({ op: 'insert', identifier: `r${i}`, data: { n: i } }));
    const id = (await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } })).json().id;

    worker = await startWorker(
      loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '50', WORKER_MAX_RUN_TIME_MS: '2500' }), // the job takes ~4.7 s here: well past it
      pino({ level: 'silent' }),
    );
    const failed = await waitFor(async () => {
      const j = await jobOf(token, id);
      return j.status === 'failed' || j.status === 'completed' ? j : undefined;
    }, { timeoutMs: 60_000, what: 'the job to time out' });
    expect(failed.status).toBe('failed');
    expect(failed.error.code).toBe('timeout');
    expect(failed.attempts).toBe(0); // a timeout is not retried by itself
    const kept = await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1', [tableId]);
    expect(kept.rows[0].n).toBe(failed.progress.done);
    expect(kept.rows[0].n).toBeGreaterThan(0);
    expect(kept.rows[0].n).toBeLessThan(100_000);
    await worker.close();

    // Retry on a worker without the short limit: the job resumes from its last committed chunk.
    worker = await startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '5000' }), pino({ level: 'silent' }));
    const retried = await api.inject({ method: 'POST', url: `/v1/jobs/${id}/retry`, headers: bearer(token) });
    expect(retried.statusCode).toBe(202);
    const done = await waitFor(async () => {
      const j = await jobOf(token, id);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 60_000, what: 'the retry to end' });
    expect(done.status).toBe('completed');
    const rows = await t.database.pool.query('select count(*)::int as n, count(distinct identifier)::int as d from cms_rows where table_id = $1', [tableId]);
    expect(rows.rows[0]).toEqual({ n: 100_000, d: 100_000 });
    // The retry resumed: the chunks committed before the timeout were not redone.
    const chunks = await t.database.pool.query('select count(*)::int as n, count(distinct seq)::int as d from job_chunks where job_id = $1', [id]);
    expect(chunks.rows[0].n).toBe(chunks.rows[0].d);
  }, 120_000);
});

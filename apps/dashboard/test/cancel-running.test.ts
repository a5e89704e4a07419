import { listAuditLog, listJobEvents } from '@platform/db';
import { createRedis, waitReady } from '@platform/jobs';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, spawnApp, waitFor, type AppProcess, type TestEnv } from '../../../test/helpers';
import { buildApp } from '../src/app';
import { runStaffCommand } from '../src/staff-cli';
import { formPost, signIn } from './helpers';

/**
 * Acceptance (issue 5): a running job cancelled from the dashboard stops at its next chunk
 * boundary on the worker process that runs it, and the audit log names the operator. Real
 * processes: the API in-process (as the studio submits), the worker spawned as deployments run it.
 */

const CHUNK = 100;
const OPERATIONS = 40_000;
let t: TestEnv;
let api: FastifyInstance;
let dashboard: FastifyInstance;
let redis: Redis;
let worker: AppProcess | undefined;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  redis = createRedis(t.redisUrl, 'producer');
  await waitReady(redis);
  dashboard = await buildApp({ db: t.database.db, redis, queuePrefix: t.queuePrefix, sessionSecret: 's'.repeat(32), cookieSecure: 'auto' });
  await runStaffCommand(t.database.db, { kind: 'add', username: 'olga', role: 'operator', password: 'operator-password-1' }, { out: () => {}, err: () => {} });
});

afterAll(async () => {
  if (worker) {
    worker.kill('SIGKILL');
    await worker.exited;
  }
  await dashboard?.close();
  await api?.close();
  redis?.disconnect();
  await t?.cleanup();
});

describe('cancelling a running job from the dashboard', () => {
  it('stops it at its next chunk boundary on the worker process, keeps what it committed, and audits the operator', async () => {
    const team = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'big-writer' } })).json();
    const project = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(team.token), payload: { name: 'p' } })).json();
    const table = (
      await api.inject({ method: 'POST', url: `/v1/projects/${project.id}/cms-tables`, headers: bearer(team.token), payload: { name: 'rows', fields: [{ name: 'n', type: 'number', required: true }] } })
    ).json();
    const operations = Array.from({ length: OPERATIONS }, (_, i) => ({ op: 'insert', identifier: `k${i}`, data: { n: i } }));
    const submitted = await api.inject({ method: 'POST', url: `/v1/cms-tables/${table.id}/bulk-writes`, headers: bearer(team.token), payload: { operations } });
    expect(submitted.statusCode).toBe(202);
    const jobId: string = submitted.json().id;

    const session = await signIn(dashboard, { username: 'olga', password: 'operator-password-1' });
    worker = spawnApp('apps/worker/src/main.ts', { ...t.env, WORKER_PORT: '0', WORKER_QUEUES: 'cms-bulk-write', WORKER_CHUNK_SIZE: String(CHUNK), LOG_LEVEL: 'info' });
    const progress = async () =>
      (await t.database.pool.query<{ status: string; done: number; owner: string | null }>('select status, progress_done::int as done, lease_owner as owner from jobs where id = $1', [jobId])).rows[0]!;
    const running = await waitFor(
      async () => {
        const p = await progress();
        return p.status === 'active' && p.done >= 20 * CHUNK ? p : undefined;
      },
      { timeoutMs: 45_000, intervalMs: 20, what: 'the bulk write to be running on the worker' },
    );
    expect(running.owner).toBeTruthy();

    const res = await dashboard.inject(formPost(session, `/jobs/${jobId}/cancel`));
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe(`/jobs/${jobId}?done=cancel_requested`);
    // The cancel request's event records the progress when it committed (the worker may already
    // have stopped by the time this test reads the row): the run may commit at most the one chunk
    // that was in flight.
    const requested = (await listJobEvents(t.database.db, jobId)).find((e) => e.kind === 'cancel_requested');
    expect(requested?.detail).toMatchObject({ by: 'olga', doneAtRequest: expect.any(Number) });
    const atCancel = { done: (requested!.detail as { doneAtRequest: number }).doneAtRequest };
    expect(atCancel.done).toBeGreaterThanOrEqual(running.done);

    const ended = await waitFor(
      async () => {
        const p = await progress();
        return p.status !== 'active' ? p : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 20, what: 'the job to stop' },
    );
    expect(ended.status).toBe('cancelled');
    expect(ended.done - atCancel.done).toBeLessThanOrEqual(CHUNK);
    expect(ended.done).toBeLessThan(OPERATIONS);
    // No half chunk: the table holds exactly the committed progress, and nothing more arrives.
    const rows = async () => (await t.database.pool.query<{ n: number }>('select count(*)::int as n from cms_rows where table_id = $1', [table.id])).rows[0]!.n;
    expect(await rows()).toBe(ended.done);
    const chunks = await t.database.pool.query<{ n: number; last: number }>('select count(*)::int as n, max(seq)::int as last from job_chunks where job_id = $1', [jobId]);
    await new Promise((r) => setTimeout(r, 500));
    expect(await rows()).toBe(ended.done);
    expect((await t.database.pool.query('select count(*)::int as n from job_chunks where job_id = $1', [jobId])).rows[0].n).toBe(chunks.rows[0]!.n);
    // The worker process is fine and still serving its queue.
    expect(worker.child.exitCode).toBeNull();

    // The audit log names the operator; the job's timeline shows who asked.
    const [entry] = await listAuditLog(t.database.db, { jobId, limit: 5 });
    expect(entry).toMatchObject({ actor: 'olga', actorRole: 'operator', via: 'session', action: 'job.cancel', jobIds: [jobId], outcome: { result: 'cancel_requested', statusBefore: 'active' } });
    expect((await listJobEvents(t.database.db, jobId)).find((e) => e.kind === 'cancel_requested')?.detail).toMatchObject({ by: 'olga' });
    const page = await dashboard.inject({ url: `/jobs/${jobId}`, headers: { cookie: session.cookie, accept: 'text/html' } });
    expect(page.body).toContain('id="job-status">cancelled');
    expect(page.body).toMatch(/<td>olga <span class="muted">\(operator, session\)<\/span><\/td><td>job\.cancel<\/td>/);
    // The API sees the same end, with the progress the job reached.
    const viaApi = (await api.inject({ url: `/v1/jobs/${jobId}`, headers: bearer(team.token) })).json();
    expect(viaApi).toMatchObject({ status: 'cancelled', progress: { done: ended.done, total: OPERATIONS } });

    worker.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    worker = undefined;
  }, 90_000);
});

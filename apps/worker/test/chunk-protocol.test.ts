import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, workerProcesses, type TestEnv } from '../../../test/helpers';

/**
 * The chunk protocol, proved with the real worker process: killed, frozen and faulted mid-job,
 * the job still ends with exactly the right rows.
 */
let t: TestEnv;
let api: FastifyInstance;
let token: string;
let projectId: string;

const workers = workerProcesses(() => ({
  ...t.env,
  WORKER_QUEUES: 'cms-bulk-write',
  WORKER_CHUNK_SIZE: '1000',
}));
const startWorker = workers.start;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t, { API_BULK_BODY_LIMIT_BYTES: String(64 * 1024 * 1024) });
  const team = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'crashy' } });
  token = team.json().token;
  projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
});

// No worker outlives its test: a leftover one would take the next test's job.
afterEach(() => workers.killAll());

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

async function newTable(): Promise<string> {
  const r = await api.inject({
    method: 'POST',
    url: `/v1/projects/${projectId}/cms-tables`,
    headers: bearer(token),
    payload: { name: 'rows', fields: [{ name: 'n', type: 'number', required: true }, { name: 'tag', type: 'text' }] },
  });
  return r.json().id;
}

/**
 * 50,000 operations: 30,000 keyed inserts, 10,000 unkeyed inserts (a replayed chunk would
 * duplicate these silently), then 5,000 updates and 5,000 deletes of keyed rows.
 */
function operations(total: number) {
  const keyed = total * 0.6;
  const unkeyed = total * 0.2;
  const ops: unknown[] = [];
  for (let i = 0; i < keyed; i++) ops.push({ op: 'insert', identifier: `k${i}`, data: { n: i } });
  for (let i = 0; i < unkeyed; i++) ops.push({ op: 'insert', data: { n: 1_000_000 + i } });
  for (let i = 0; i < total * 0.1; i++) ops.push({ op: 'update', identifier: `k${i}`, data: { n: i, tag: 'updated' } });
  for (let i = 0; i < total * 0.1; i++) ops.push({ op: 'delete', identifier: `k${keyed - 1 - i}` });
  return { ops, keyed, unkeyed, updated: total * 0.1, deleted: total * 0.1 };
}

async function submit(tableId: string, ops: unknown[]): Promise<string> {
  const r = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations: ops } });
  expect(r.statusCode).toBe(202);
  return r.json().id;
}

async function jobState(id: string) {
  return (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();
}

async function expectExactRows(tableId: string, plan: ReturnType<typeof operations>) {
  const q = await t.database.pool.query(
    `select count(*)::int as alive,
            count(distinct identifier)::int as idents,
            count(*) filter (where (draft_data->>'n')::int >= 1000000)::int as unkeyed,
            count(distinct (draft_data->>'n')) filter (where (draft_data->>'n')::int >= 1000000)::int as unkeyed_distinct,
            count(*) filter (where draft_data->>'tag' = 'updated')::int as updated
     from cms_rows where table_id = $1 and deleted_at is null`,
    [tableId],
  );
  const deleted = await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1 and deleted_at is not null', [tableId]);
  const r = q.rows[0];
  expect(r.alive).toBe(plan.keyed + plan.unkeyed - plan.deleted);
  expect(r.idents).toBe(r.alive);
  expect(r.unkeyed).toBe(plan.unkeyed);
  expect(r.unkeyed_distinct).toBe(plan.unkeyed);
  expect(r.updated).toBe(plan.updated);
  expect(deleted.rows[0].n).toBe(plan.deleted);
}

describe('chunk protocol with the real worker process', () => {
  it('a 50,000-operation bulk write whose worker is SIGKILLed twice mid-job ends with exactly the right rows', async () => {
    const tableId = await newTable();
    const plan = operations(50_000);
    const jobId = await submit(tableId, plan.ops);

    // First worker: killed by SIGKILL inside the transaction of chunk 12, between its writes and its commit.
    const w1 = startWorker({ CHUNK_FAULT: 'kill@12' });
    expect((await w1.exited).signal).toBe('SIGKILL');
    const afterFirst = await jobState(jobId);
    expect(afterFirst.status).toBe('active');
    expect(afterFirst.progress.done).toBe(10_000); // chunk 1 validates; chunks 2..11 wrote 1,000 each

    // Second worker: takes the job over once its lock expires, and is SIGKILLed from outside mid-job.
    const w2 = startWorker();
    await waitFor(async () => (await jobState(jobId)).progress.done >= 25_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress past 25,000' });
    w2.kill('SIGKILL');
    await w2.exited;
    const afterSecond = await jobState(jobId);
    expect(afterSecond.status).toBe('active');
    expect(afterSecond.progress.done).toBeLessThan(50_000);

    // Third worker finishes from the last committed chunk.
    startWorker();
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 90_000, what: 'the job to end' });
    expect(done.status).toBe('completed');
    expect(done.progress).toEqual({ done: 50_000, total: 50_000 });
    expect(done.result).toEqual({ inserted: plan.keyed + plan.unkeyed, updated: plan.updated, deleted: plan.deleted });
    await expectExactRows(tableId, plan);

    // Every committed chunk appears once; later runs carry later leases.
    const chunks = await t.database.pool.query('select seq, lease from job_chunks where job_id = $1 order by seq', [jobId]);
    expect(chunks.rows.map((c) => c.seq)).toEqual(Array.from({ length: 51 }, (_, i) => i + 1));
    expect(new Set(chunks.rows.map((c) => c.lease)).size).toBeGreaterThanOrEqual(3);
    // Chunk 12 (the one killed mid-commit) was committed by a later run, not by the first.
    expect(chunks.rows[10].lease).toBe(1);
    expect(chunks.rows[11].lease).toBe(2);
  }, 180_000);

  it('a worker frozen past its lock (stale lease) commits nothing once it wakes; the job ends exact', async () => {
    const tableId = await newTable();
    const plan = operations(20_000);
    const jobId = await submit(tableId, plan.ops);
    const stale = startWorker({ WORKER_CHUNK_SIZE: '200' });
    await waitFor(async () => (await jobState(jobId)).progress.done >= 4_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress' });
    stale.child.kill('SIGSTOP');
    const frozenAt = await t.database.pool.query('select max(lease)::int as lease from job_chunks where job_id = $1', [jobId]);
    const staleLease = frozenAt.rows[0].lease as number;
    const staleChunks = await t.database.pool.query('select count(*)::int as n from job_chunks where job_id = $1 and lease = $2', [jobId, staleLease]);

    // Another worker takes the job over and completes it while the first is frozen.
    const fresh = startWorker({ WORKER_CHUNK_SIZE: '200' });
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' ? j : undefined;
    }, { timeoutMs: 90_000, what: 'the job to complete on the second worker' });
    expect(done.progress.done).toBe(20_000);

    // Wake the stale worker: its next commit is fenced out.
    stale.child.kill('SIGCONT');
    await waitFor(async () => stale.output().includes('stale run fenced out'), { timeoutMs: 30_000, what: 'the stale worker to be fenced' });
    const after = await t.database.pool.query('select count(*)::int as n from job_chunks where job_id = $1 and lease = $2', [jobId, staleLease]);
    expect(after.rows[0].n).toBe(staleChunks.rows[0].n);
    const final = await jobState(jobId);
    expect(final.status).toBe('completed');
    await expectExactRows(tableId, plan);
    fresh.kill('SIGTERM');
    stale.kill('SIGTERM');
    await Promise.all([fresh.exited, stale.exited]);
  }, 180_000);

  it('a failure injected inside a chunk leaves neither rows nor checkpoint: the retry redoes that chunk once', async () => {
    const tableId = await newTable();
    const plan = operations(10_000);
    const jobId = await submit(tableId, plan.ops);
    const w = startWorker({ CHUNK_FAULT: 'throw@5' });
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 60_000, what: 'the job to end' });
    expect(done.status).toBe('completed');
    expect(done.attempts).toBe(1);
    await expectExactRows(tableId, plan);
    const chunks = await t.database.pool.query('select seq, lease from job_chunks where job_id = $1 order by seq', [jobId]);
    expect(chunks.rows.map((c) => c.seq)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
    // Chunks 1-4 by the first run; chunk 5 onwards by the retry, which resumed at chunk 5.
    expect(chunks.rows.slice(0, 4).every((c) => c.lease === 1)).toBe(true);
    expect(chunks.rows.slice(4).every((c) => c.lease === 2)).toBe(true);
    expect(w.output()).toContain('injected fault inside chunk 5');
    w.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
  }, 120_000);
});

describe('crash loops', () => {
  it('a job that kills its worker every time ends failed after its allowed stalls, and the history says so', async () => {
    const tableId = await newTable();
    const plan = operations(5_000);
    const jobId = await submit(tableId, plan.ops);
    // Each process dies inside its first write chunk (chunk 2); the replacement detects the stall.
    const extra = { WORKER_CHUNK_SIZE: '500', CHUNK_FAULT: 'kill@2', WORKER_MAX_STALLED_COUNT: '1' };
    let runs = 0;
    const final = await waitFor(async () => {
      const j = await jobState(jobId);
      if (j.status === 'failed' || j.status === 'completed') return j;
      const alive = workers.list.filter((w) => w.child.exitCode === null && w.child.signalCode === null);
      if (alive.length === 0 && runs < 6) {
        runs++;
        startWorker(extra);
      }
      return undefined;
    }, { timeoutMs: 90_000, intervalMs: 200, what: 'the crash-looping job to end' });
    expect(final.status).toBe('failed');
    expect(final.error.code).toBe('stalled');
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(runs).toBeLessThanOrEqual(4);
    // Only the validation chunk ever committed; no write chunk was half-applied.
    const rows = await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1', [tableId]);
    expect(rows.rows[0].n).toBe(0);
  }, 120_000);
});

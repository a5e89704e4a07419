import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv, workerProcesses } from '../../../test/helpers';

/**
 * A publish of 30,000 rows in three tables, its worker killed twice mid-job (once inside a chunk
 * transaction, once from outside): one version, every row live, and `publishedRows` exact.
 */
let t: TestEnv;
let api: FastifyInstance;
let token: string;
let teamId: string;
let projectId: string;
const tableIds: string[] = [];

const ROWS_PER_TABLE = 10_000;
const TOTAL = 3 * ROWS_PER_TABLE;

const workers = workerProcesses(() => ({
  ...t.env,
  WORKER_QUEUES: 'project-publish',
  WORKER_CHUNK_SIZE: '1000',
}));
const startWorker = workers.start;

async function jobState(id: string) {
  return (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  const team = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'publisher' } });
  token = team.json().token;
  teamId = team.json().id;
  projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'big' } })).json().id;
  const rev = await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/revisions`, headers: bearer(token), payload: { data: { pages: 3 } } });
  expect(rev.statusCode).toBe(201);
  for (const name of ['a', 'b', 'c']) {
    const r = await api.inject({
      method: 'POST',
      url: `/v1/projects/${projectId}/cms-tables`,
      headers: bearer(token),
      payload: { name, fields: [{ name: 'n', type: 'number', required: true }, { name: 'title', type: 'text' }] },
    });
    tableIds.push(r.json().id);
    // Straight into the table: 10,000 draft rows, never published.
    await t.database.pool.query(
      `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
       select gen_random_uuid(), $1, $2, 'r' || g, jsonb_build_object('n', g, 'title', 'Row ' || g)
       from generate_series(1, $3::int) g`,
      [r.json().id, teamId, ROWS_PER_TABLE],
    );
  }
});

afterEach(() => workers.killAll());

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

describe('publish with the real worker process', () => {
  it('a 30,000-row publish whose worker is SIGKILLed twice makes one version and publishes every row exactly once', async () => {
    const res = await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/publishes`, headers: bearer(token), payload: {} });
    expect(res.statusCode, res.body).toBe(202);
    const jobId: string = res.json().id;

    // First worker: chunk 1 makes the version, chunks 2-6 publish 1,000 rows each, and the
    // process is SIGKILLed inside chunk 7's transaction, between its writes and its commit.
    const w1 = startWorker({ CHUNK_FAULT: 'kill@7' });
    expect((await w1.exited).signal).toBe('SIGKILL');
    const afterFirst = await jobState(jobId);
    expect(afterFirst.status).toBe('active');
    expect(afterFirst.progress).toEqual({ done: 5_000, total: TOTAL });
    const published = () => t.database.pool.query<{ n: number }>(
      'select count(*)::int as n from cms_rows where table_id = any($1::uuid[]) and data is not null',
      [tableIds],
    );
    expect((await published()).rows[0]!.n).toBe(5_000);

    // Second worker takes over once the lock expires; it is SIGKILLed from outside mid-job.
    const w2 = startWorker();
    // Polled straight from the history row: the run commits a chunk every ~20 ms.
    await waitFor(
      async () => (await t.database.pool.query('select progress_done from jobs where id = $1', [jobId])).rows[0].progress_done >= 18_000,
      { timeoutMs: 30_000, intervalMs: 2, what: 'progress past 18,000' },
    );
    w2.kill('SIGKILL');
    await w2.exited;
    const afterSecond = await jobState(jobId);
    expect(afterSecond.status).toBe('active');
    expect(afterSecond.progress.done).toBeLessThan(TOTAL);

    // Third worker resumes from the last committed chunk and completes.
    startWorker();
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 30_000, what: 'the job to end' });
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.progress).toEqual({ done: TOTAL, total: TOTAL });

    const versions = await t.database.pool.query('select id, version, job_id from project_versions where project_id = $1', [projectId]);
    expect(versions.rows).toEqual([{ id: done.result.versionId, version: 1, job_id: jobId }]);
    expect(done.result).toEqual({ versionId: versions.rows[0].id, version: 1, publishedRows: TOTAL });

    const rows = await t.database.pool.query(
      `select count(*)::int as n, count(*) filter (where data = draft_data)::int as live
       from cms_rows where table_id = any($1::uuid[])`,
      [tableIds],
    );
    expect(rows.rows[0]).toEqual({ n: TOTAL, live: TOTAL });

    // Every chunk committed once: the version, then 30 batches of 1,000; chunk 7 by the second run.
    const chunks = await t.database.pool.query<{ seq: number; lease: number; rows: number; duration_ms: number; at: Date }>(
      'select seq, lease, rows, duration_ms, committed_at as at from job_chunks where job_id = $1 order by seq',
      [jobId],
    );
    expect(chunks.rows.map((c) => c.seq)).toEqual(Array.from({ length: 31 }, (_, i) => i + 1));
    expect(chunks.rows.slice(1).every((c) => c.rows === 1_000)).toBe(true);
    expect(chunks.rows[5]!.lease).toBe(1);
    expect(chunks.rows[6]!.lease).toBe(2);
    expect(new Set(chunks.rows.map((c) => c.lease)).size).toBe(3);

    // Throughput of the uninterrupted third run (committed chunks per wall-clock time).
    const last = chunks.rows.filter((c) => c.lease === 3);
    const spanMs = last[last.length - 1]!.at.getTime() - last[0]!.at.getTime() + last[0]!.duration_ms;
    const rowsDone = last.reduce((s, c) => s + c.rows, 0);
    const txMs = chunks.rows.slice(1).reduce((s, c) => s + c.duration_ms, 0);
    console.log(
      `publish throughput: ${rowsDone} rows in ${spanMs} ms by the last run = ${Math.round((rowsDone / spanMs) * 1000)} rows/s; ` +
        `chunk transactions: ${TOTAL} rows in ${txMs} ms = ${Math.round((TOTAL / txMs) * 1000)} rows/s; ` +
        `longest chunk ${Math.max(...chunks.rows.map((c) => c.duration_ms))} ms`,
    );
  }, 60_000);
});

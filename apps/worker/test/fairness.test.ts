import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

/** Fair sharing between teams, with the real worker runtime on real Redis and PostgreSQL. */
let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
});
afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

async function team(name: string) {
  const token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name } })).json().token as string;
  const projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
  const table = async () =>
    (
      await api.inject({
        method: 'POST',
        url: `/v1/projects/${projectId}/cms-tables`,
        headers: bearer(token),
        payload: { name: 't', fields: [{ name: 'n', type: 'number' }] },
      })
    ).json().id as string;
  return { token, table };
}

async function bulkWrite(token: string, tableId: string, n: number): Promise<string> {
  const operations = Array.from({ length: n }, (_, i) => ({ op: 'insert', data: { n: i } }));
  const r = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
  expect(r.statusCode, r.body).toBe(202);
  return r.json().id;
}

const run = (env: Record<string, string>) =>
  startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', ...env }), pino({ level: 'warn' }));

describe('fair scheduling between teams', () => {
  it('interleaves two teams that each enqueue 20 equal jobs at once: neither gets more than the concurrency ahead', async () => {
    const a = await team('A');
    const b = await team('B');
    // One table per job: jobs on one table would run one at a time whatever the scheduling.
    const tablesA = await Promise.all(Array.from({ length: 20 }, () => a.table()));
    const tablesB = await Promise.all(Array.from({ length: 20 }, () => b.table()));
    const idsA: string[] = [];
    const idsB: string[] = [];
    for (const tbl of tablesA) idsA.push(await bulkWrite(a.token, tbl, 300));
    for (const tbl of tablesB) idsB.push(await bulkWrite(b.token, tbl, 300));
    worker = await run({ WORKER_CONCURRENCY: '4', WORKER_CHUNK_SIZE: '100' });
    const all = [...idsA, ...idsB];
    await waitFor(async () => {
      const r = await t.database.pool.query(`select count(*)::int as n from jobs where id = any($1) and status = 'completed'`, [all]);
      return r.rows[0].n === 40;
    }, { timeoutMs: 90_000, what: '40 jobs to complete' });
    const order = await t.database.pool.query(`select id from jobs where id = any($1) order by finished_at, seq`, [all]);
    const setA = new Set(idsA);
    let lead = 0;
    let maxLead = 0;
    for (const r of order.rows) {
      lead += setA.has(r.id) ? 1 : -1;
      maxLead = Math.max(maxLead, Math.abs(lead));
    }
    console.log(`fairness: the largest lead of one team over the other was ${maxLead} completions (concurrency 4)`);
    expect(maxLead).toBeLessThanOrEqual(4);
  }, 120_000);

  it('a long job yields its slot at a chunk boundary: another team’s small job runs before it ends, and it still ends exact', async () => {
    const a = await team('long');
    const b = await team('small');
    const longId = await bulkWrite(a.token, await a.table(), 60_000);
    worker = await run({ WORKER_CONCURRENCY: '1', WORKER_CHUNK_SIZE: '200', WORKER_TIME_SLICE_MS: '200' });
    await waitFor(async () => {
      const r = await t.database.pool.query('select progress_done::int as d from jobs where id = $1', [longId]);
      return r.rows[0].d >= 2_000;
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the long job to be under way' });
    const submitted = Date.now();
    const smallId = await bulkWrite(b.token, await b.table(), 100);
    await waitFor(async () => {
      const r = await t.database.pool.query(`select status from jobs where id = $1`, [smallId]);
      return r.rows[0].status === 'completed';
    }, { timeoutMs: 30_000, intervalMs: 20, what: 'the small job to complete' });
    const waited = Date.now() - submitted;
    const long = await t.database.pool.query('select status, progress_done::int as d, dispatches from jobs where id = $1', [longId]);
    console.log(`fairness: team B's 100-operation job completed ${waited} ms after it was submitted, while team A's 60,000-operation job was at ${long.rows[0].d}`);
    expect(long.rows[0].status).toBe('active');
    expect(long.rows[0].dispatches).toBeGreaterThanOrEqual(1); // it yielded and was handed back

    const done = await waitFor(async () => {
      const r = await t.database.pool.query(`select status from jobs where id = $1`, [longId]);
      return r.rows[0].status === 'completed' ? r.rows[0] : undefined;
    }, { timeoutMs: 90_000, what: 'the long job to complete' });
    expect(done.status).toBe('completed');
    const rows = await t.database.pool.query(
      `select count(*)::int as n, count(distinct draft_data->>'n')::int as d from cms_rows r join jobs j on j.payload->>'tableId' = r.table_id::text where j.id = $1`,
      [longId],
    );
    expect(rows.rows[0]).toEqual({ n: 60_000, d: 60_000 });
  }, 150_000);
});

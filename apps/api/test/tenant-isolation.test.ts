import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { createWorkspace, expectError, insertRows, queuedJob } from './support';

let t: TestEnv;
let api: FastifyInstance;
let a: Awaited<ReturnType<typeof createWorkspace>>;
let b: Awaited<ReturnType<typeof createWorkspace>>;
let bRowId: string;
let bJobId: string;
let bEndedJobId: string;
let aJobId: string;

/** Everything of team B that a request of team A could change, as one comparable snapshot. */
async function snapshotOfB() {
  const q = async (sql: string) => (await t.database.pool.query(sql, [b.team.id])).rows;
  return {
    projects: await q('select id, name from projects where team_id = $1 order by id'),
    revisions: await q('select id, revision from project_revisions where team_id = $1 order by id'),
    tables: await q('select id, name, fields from cms_tables where team_id = $1 order by id'),
    rows: await q('select id, identifier, draft_data, data, updated_at, deleted_at from cms_rows where team_id = $1 order by id'),
    jobs: await q('select id, status, dispatches, attempts, cancel_requested_at, finished_at from jobs where team_id = $1 order by id'),
    keys: await q('select key from idempotency_keys where team_id = $1 order by key'),
  };
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  a = await createWorkspace(api, 'team-a');
  b = await createWorkspace(api, 'team-b');
  bRowId = (await insertRows(t.database, { id: b.tableId, teamId: b.team.id }, [{ identifier: 'b-1', draftData: { title: 'B secret' } }]))[0]!;
  bJobId = (await queuedJob(api, b.token, b.tableId)).id;
  bEndedJobId = (await queuedJob(api, b.token, b.tableId)).id;
  const cancel = await api.inject({ method: 'POST', url: `/v1/jobs/${bEndedJobId}/cancel`, headers: bearer(b.token) });
  expect(cancel.statusCode).toBe(202);
  aJobId = (await queuedJob(api, a.token, a.tableId)).id;
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

describe('tenant isolation', () => {
  it("answers 404 not_found to every team route called with team A's token on team B's ids, and changes nothing", async () => {
    const requests: (InjectOptions & { url: string })[] = [
      { method: 'POST', url: `/v1/projects/${b.projectId}/revisions`, payload: { data: { hacked: true } } },
      { method: 'POST', url: `/v1/projects/${b.projectId}/cms-tables`, payload: { name: 'evil', fields: [] } },
      { method: 'GET', url: `/v1/cms-tables/${b.tableId}/rows` },
      { method: 'GET', url: `/v1/cms-tables/${b.tableId}/rows?published=true` },
      { method: 'GET', url: `/v1/cms-tables/${b.tableId}/rows/${bRowId}` },
      // B's row id under A's own table: rows belong to their table and team.
      { method: 'GET', url: `/v1/cms-tables/${a.tableId}/rows/${bRowId}` },
      {
        method: 'POST',
        url: `/v1/cms-tables/${b.tableId}/bulk-writes`,
        payload: { operations: [{ op: 'update', id: bRowId, data: { title: 'pwned' } }] },
      },
      {
        method: 'POST',
        url: `/v1/cms-tables/${b.tableId}/bulk-writes`,
        payload: { operations: [{ op: 'delete', identifier: 'b-1' }] },
        headers: { 'idempotency-key': 'iso-key' },
      },
      {
        method: 'POST',
        url: `/v1/cms-tables/${b.tableId}/imports?format=csv`,
        payload: 'title\nx\n',
        headers: { 'content-type': 'text/csv' },
      },
      {
        method: 'POST',
        url: `/v1/cms-tables/${b.tableId}/imports?format=ndjson`,
        payload: '{"title":"x"}\n',
        headers: { 'content-type': 'application/x-ndjson' },
      },
      { method: 'POST', url: `/v1/cms-tables/${b.tableId}/exports`, payload: { format: 'csv' } },
      { method: 'POST', url: `/v1/projects/${b.projectId}/publishes`, payload: {} },
      { method: 'GET', url: `/v1/jobs/${bJobId}` },
      { method: 'POST', url: `/v1/jobs/${bJobId}/cancel` },
      { method: 'POST', url: `/v1/jobs/${bEndedJobId}/retry` },
      { method: 'GET', url: `/v1/jobs/${bJobId}/download` },
    ];
    const before = await snapshotOfB();
    for (const r of requests) {
      const res = await api.inject({ ...r, headers: { ...bearer(a.token), ...(r.headers ?? {}) } });
      const err = expectError(res, 404, 'not_found');
      expect(JSON.stringify(err), `${r.method} ${r.url}`).not.toContain('B secret');
    }
    expect(await snapshotOfB()).toEqual(before);
    // The refused requests did not create jobs for A either.
    const aJobs = await t.database.pool.query('select id from jobs where team_id = $1', [a.team.id]);
    expect(aJobs.rows.map((r) => r.id)).toEqual([aJobId]);
  });

  it('answers the same 404 for another team’s id as for an id that does not exist', async () => {
    const unknown = '01890000-0000-7000-8000-000000000000';
    const theirs = await api.inject({ method: 'GET', url: `/v1/jobs/${bJobId}`, headers: bearer(a.token) });
    const none = await api.inject({ method: 'GET', url: `/v1/jobs/${unknown}`, headers: bearer(a.token) });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json()).toEqual(none.json());
  });

  it("lists only the caller's jobs on GET /v1/jobs", async () => {
    const res = await api.inject({ method: 'GET', url: '/v1/jobs?limit=500', headers: bearer(a.token) });
    expect(res.statusCode).toBe(200);
    expect(res.json().jobs.map((j: { id: string }) => j.id)).toEqual([aJobId]);
    const other = await api.inject({ method: 'GET', url: '/v1/jobs?status=cancelled', headers: bearer(a.token) });
    expect(other.json().jobs).toEqual([]);
    const bList = await api.inject({ method: 'GET', url: '/v1/jobs', headers: bearer(b.token) });
    expect(bList.json().jobs.map((j: { id: string }) => j.id).sort()).toEqual([bJobId, bEndedJobId].sort());
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, createTestEnv, type TestEnv } from '../helpers';
import { figure } from './figures';
import { Fleet, keysHoldingSecrets, startApi, waitEnded, type ApiProcess, type CallOptions, type Workspace, createWorkspace, postImport } from './support';

/**
 * The tenant isolation matrix against the real API and worker processes: every route and method
 * with team A's token on team B's ids answers 404 (admin routes: 403) and changes nothing; A's
 * exports hold none of B's rows; no token is readable in Redis afterwards.
 */
let t: TestEnv;
let api: ApiProcess;
let a: Workspace;
let b: Workspace & { rowId: string; revisionId: string; jobs: Record<'import' | 'publish' | 'export' | 'failed' | 'cancelled', string> };
const fleet = new Fleet(() => ({ ...t.env, WORKER_PORT: '0', LOG_LEVEL: 'warn' }));
const B_MARK = 'B-SECRET-ROW';

/**
 * `text` holds `needle` as a value of its own (a CSV cell, a JSON string), not inside a longer
 * word: A's row ids are UUIDs, and one like `…-aa0b-2f31…` holds "b-2".
 */
function holdsToken(text: string, needle: string): boolean {
  const escaped = needle.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![0-9A-Za-z-])${escaped}(?![0-9A-Za-z-])`).test(text);
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await startApi(t.env);
  fleet.start();
  a = await createWorkspace(api, 'team-a');
  const bw = await createWorkspace(api, 'team-b');
  // B's rows, made live by a publish; a completed export (with its file); a failed import.
  const jobs = { import: '', publish: '', export: '', failed: '', cancelled: '' };
  jobs.import = await postImport(api, bw.token, bw.tableId, [1, 2, 3].map((i) => JSON.stringify({ identifier: `b-${i}`, title: `${B_MARK} ${i}`, views: i })).join('\n'));
  await waitEnded(t.database, jobs.import, 60_000);
  const rev = await api.call('POST', `/v1/projects/${bw.projectId}/revisions`, { token: bw.token, json: { data: { page: B_MARK } } });
  const pub = await api.call('POST', `/v1/projects/${bw.projectId}/publishes`, { token: bw.token, json: {} });
  jobs.publish = pub.json().id;
  const exp = await api.call('POST', `/v1/cms-tables/${bw.tableId}/exports`, { token: bw.token, json: { format: 'csv' }, headers: { 'idempotency-key': 'shared-key' } });
  jobs.export = exp.json().id;
  jobs.failed = await postImport(api, bw.token, bw.tableId, '{"identifier":"bad","title":5}\n');
  for (const id of [jobs.publish, jobs.export, jobs.failed]) await waitEnded(t.database, id, 60_000);
  jobs.cancelled = (await api.call('POST', `/v1/cms-tables/${bw.tableId}/exports`, { token: bw.token, json: { format: 'ndjson' } })).json().id;
  await api.call('POST', `/v1/jobs/${jobs.cancelled}/cancel`, { token: bw.token });
  await waitEnded(t.database, jobs.cancelled, 60_000);
  const rowId = (await t.database.pool.query(`select id from cms_rows where table_id = $1 and identifier = 'b-1'`, [bw.tableId])).rows[0].id;
  b = { ...bw, rowId, revisionId: rev.json().id, jobs };
  // A has rows and jobs of its own too.
  const aImport = await postImport(api, a.token, a.tableId, [1, 2].map((i) => JSON.stringify({ identifier: `a-${i}`, title: `A row ${i}`, views: i })).join('\n'));
  await waitEnded(t.database, aImport, 60_000);
}, 120_000);

afterAll(async () => {
  await fleet.killAll();
  await api?.stop();
  await t?.cleanup();
});

/** Everything of team B that a request of team A could change. */
async function snapshotOfB() {
  const q = async (sql: string) => (await t.database.pool.query(sql, [b.teamId])).rows;
  return {
    projects: await q('select id, name from projects where team_id = $1 order by id'),
    revisions: await q('select id, revision, data from project_revisions where team_id = $1 order by id'),
    tables: await q('select id, name, fields from cms_tables where team_id = $1 order by id'),
    rows: await q('select id, identifier, draft_data, data, updated_at, deleted_at from cms_rows where team_id = $1 order by id'),
    jobs: await q('select id, status, lease, dispatches, attempts, cancel_requested_at, finished_at, result from jobs where team_id = $1 order by id'),
    keys: await q('select key, job_id from idempotency_keys where team_id = $1 order by key'),
    tokens: await q('select id, revoked_at from api_tokens where team_id = $1 order by id'),
  };
}

describe('tenant isolation matrix', () => {
  it("every route and method with team A's token on team B's ids answers 404 (admin routes 403) and changes nothing", async () => {
    const csv = { body: 'title\nx\n', headers: { 'content-type': 'text/csv' } };
    const nd = { body: '{"title":"x"}\n', headers: { 'content-type': 'application/x-ndjson' } };
    const team: [string, string, CallOptions?][] = [
      ['POST', `/v1/projects/${b.projectId}/revisions`, { json: { data: { hacked: true } } }],
      ['POST', `/v1/projects/${b.projectId}/cms-tables`, { json: { name: 'evil', fields: [] } }],
      ['POST', `/v1/projects/${b.projectId}/publishes`, { json: {} }],
      ['POST', `/v1/projects/${b.projectId}/publishes`, { json: { revisionId: b.revisionId } }],
      ['GET', `/v1/cms-tables/${b.tableId}/rows`],
      ['GET', `/v1/cms-tables/${b.tableId}/rows?published=true`],
      ['GET', `/v1/cms-tables/${b.tableId}/rows/${b.rowId}`],
      ['GET', `/v1/cms-tables/${a.tableId}/rows/${b.rowId}`],
      ['POST', `/v1/cms-tables/${b.tableId}/bulk-writes`, { json: { operations: [{ op: 'update', id: b.rowId, data: { title: 'pwned' } }] } }],
      ['POST', `/v1/cms-tables/${b.tableId}/bulk-writes`, { json: { operations: [{ op: 'delete', identifier: 'b-1' }] }, headers: { 'idempotency-key': 'iso' } }],
      ['POST', `/v1/cms-tables/${b.tableId}/imports?format=csv`, csv],
      ['POST', `/v1/cms-tables/${b.tableId}/imports?format=ndjson&mode=upsert`, nd],
      ['POST', `/v1/cms-tables/${b.tableId}/exports`, { json: { format: 'csv' } }],
      ['POST', `/v1/cms-tables/${b.tableId}/exports`, { json: { format: 'ndjson', published: true } }],
      ...Object.values(b.jobs).flatMap((id): [string, string, CallOptions?][] => [
        ['GET', `/v1/jobs/${id}`],
        ['POST', `/v1/jobs/${id}/cancel`],
        ['POST', `/v1/jobs/${id}/retry`],
        ['GET', `/v1/jobs/${id}/download`],
      ]),
    ];
    const admin: [string, string, CallOptions?][] = [
      ['POST', '/v1/admin/teams', { json: { name: 'evil' } }],
      ['POST', `/v1/admin/teams/${b.teamId}/tokens`],
      ['DELETE', `/v1/admin/tokens/${b.tokenId}`],
    ];
    const before = await snapshotOfB();
    const wrong: string[] = [];
    for (const [method, path, o] of team) {
      const r = await api.call(method, path, { ...o, token: a.token });
      if (r.status !== 404 || r.json().error?.code !== 'not_found' || r.body.includes(B_MARK)) wrong.push(`${method} ${path} → ${r.status}`);
    }
    for (const [method, path, o] of admin) {
      const r = await api.call(method, path, { ...o, token: a.token });
      if (r.status !== 403 || r.json().error?.code !== 'forbidden') wrong.push(`${method} ${path} → ${r.status}`);
    }
    // B's revision named in A's own publish: the answer must be the one an unknown id gets (the
    // route answers 400 for a revision that is not one of the project's), revealing nothing.
    const theirs = await api.call('POST', `/v1/projects/${a.projectId}/publishes`, { token: a.token, json: { revisionId: b.revisionId } });
    const unknown = await api.call('POST', `/v1/projects/${a.projectId}/publishes`, { token: a.token, json: { revisionId: '01890000-0000-7000-8000-000000000000' } });
    if (theirs.status !== unknown.status || theirs.body !== unknown.body) wrong.push(`B's revision in A's publish → ${theirs.status}, unknown → ${unknown.status}`);
    const after = await snapshotOfB();
    const aJobs = (await t.database.pool.query(`select count(*)::int as n from jobs where team_id = $1`, [a.teamId])).rows[0].n;
    const held = figure(
      `isolation matrix: ${team.length + 1} team requests and ${admin.length} admin requests with A's token on B's ids`,
      `${team.length + admin.length + 1 - wrong.length} answered as expected${wrong.length ? ` (not: ${wrong.join('; ')})` : ''}; B ${JSON.stringify(after) === JSON.stringify(before) ? 'unchanged' : 'CHANGED'}; A's jobs ${aJobs}`,
      `${team.length + admin.length + 1} (404 not_found; admin 403; B's revision in A's publish as an unknown id); B unchanged; A's jobs 1`,
      wrong.length === 0 && JSON.stringify(after) === JSON.stringify(before) && aJobs === 1,
    );
    expect(wrong).toEqual([]);
    expect(after).toEqual(before);
    expect(held).toBe(true);
  });

  it("an Idempotency-Key is scoped to its team: A reusing B's key gets a job of its own", async () => {
    const r = await api.call('POST', `/v1/cms-tables/${a.tableId}/exports`, { token: a.token, json: { format: 'csv' }, headers: { 'idempotency-key': 'shared-key' } });
    const held = figure(
      "A reuses B's Idempotency-Key",
      `${r.status}, ${r.json().id === b.jobs.export ? "B's job" : 'a job of its own'}`,
      '202, a job of its own',
      r.status === 202 && r.json().id !== b.jobs.export,
    );
    expect(held).toBe(true);
    await waitEnded(t.database, r.json().id, 60_000);
  });

  it("A's exports (CSV and NDJSON, drafts and published) contain none of B's rows; A lists only its own jobs", async () => {
    const found: string[] = [];
    let rowsSeen = 0;
    for (const body of [{ format: 'csv' }, { format: 'ndjson' }, { format: 'csv', published: true }, { format: 'ndjson', published: true }]) {
      const r = await api.call('POST', `/v1/cms-tables/${a.tableId}/exports`, { token: a.token, json: body });
      expect(r.status, r.body).toBe(202);
      const job = await waitEnded(t.database, r.json().id, 60_000);
      expect(job.status).toBe('completed');
      const file = await api.call('GET', `/v1/jobs/${job.id}/download`, { token: a.token });
      expect(file.status).toBe(200);
      if (!body.published) rowsSeen += file.body.split('\n').filter((l) => l.includes('A row')).length;
      for (const needle of [B_MARK, 'b-1', 'b-2', 'b-3', b.rowId]) if (holdsToken(file.body, needle)) found.push(`${JSON.stringify(body)}: ${needle}`);
    }
    const list = await api.call('GET', '/v1/jobs?limit=500', { token: a.token });
    const foreign = list.json().jobs.filter((j: { id: string }) => Object.values(b.jobs).includes(j.id)).length;
    const held = figure(
      "A's exports: B's rows or ids in them; B's jobs in A's job list",
      `${found.length} found (${rowsSeen} of A's rows exported); ${foreign} listed`,
      "0 found (4 of A's rows: 2 per draft export); 0 listed",
      found.length === 0 && rowsSeen === 4 && foreign === 0,
    );
    expect(found).toEqual([]);
    expect(held).toBe(true);
  });

  it('no team token or the admin token is readable in Redis (every key of this file’s prefix)', async () => {
    const { scanned, leaks } = await keysHoldingSecrets(t.redisUrl, `${t.env.QUEUE_PREFIX}*`, [a.token, b.token, ADMIN_TOKEN]);
    const held = figure('tokens readable in Redis (every key of the prefix)', `${leaks.length} keys of ${scanned}`, `0 keys of ${scanned}`, leaks.length === 0 && scanned > 0);
    expect(held, leaks.join(', ')).toBe(true);
  });
});

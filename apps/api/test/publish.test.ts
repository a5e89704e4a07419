import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { loadConfig } from '../../worker/src/config';
import { startWorker, type WorkerRuntime } from '../../worker/src/create-worker';
import { bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { count, createTeam, expectError, type Team } from './support';

/**
 * `project.publish` end to end, with an in-process worker: the version it makes, the rows it makes
 * live, and the exact count of rows whose live data it changed.
 */
let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime;
let team: Team;
let projectId: string;
let postsId: string;
let tagsId: string;
const revisions: { id: string; revision: number; data: unknown }[] = [];

const POSTS = 120;
const TAGS = 70;

async function post(url: string, payload?: unknown, headers: Record<string, string> = {}, token = team.token) {
  return api.inject({ method: 'POST', url, headers: { ...bearer(token), ...headers }, ...(payload !== undefined ? { payload: payload as object } : {}) });
}

async function finished(jobId: string) {
  return waitFor(async () => {
    const j = (await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}`, headers: bearer(team.token) })).json();
    return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
  }, { what: `job ${jobId} to end` });
}

async function bulkWrite(tableId: string, operations: unknown[]): Promise<string> {
  const res = await post(`/v1/cms-tables/${tableId}/bulk-writes`, { operations });
  expect(res.statusCode, res.body).toBe(202);
  return res.json().id;
}

async function publish(payload?: unknown, headers: Record<string, string> = {}) {
  const res = await post(`/v1/projects/${projectId}/publishes`, payload, headers);
  expect(res.statusCode, res.body).toBe(202);
  return res.json();
}

async function publishAndWait(payload?: unknown) {
  const job = await finished((await publish(payload)).id);
  expect(job.status, JSON.stringify(job.error)).toBe('completed');
  return job;
}

async function publishedRows(tableId: string) {
  const res = await api.inject({ method: 'GET', url: `/v1/cms-tables/${tableId}/rows?published=true&limit=500`, headers: bearer(team.token) });
  expect(res.statusCode).toBe(200);
  return res.json().rows as { identifier: string; data: Record<string, unknown>; draftData: Record<string, unknown> }[];
}

/** Rows of the project whose live data is not what a publish makes it (draft, or null when deleted). */
async function notLive(): Promise<number> {
  return count(
    t.database,
    `cms_rows where table_id = any($1::uuid[]) and data is distinct from (case when deleted_at is null then draft_data end)`,
    [[postsId, tagsId]],
  );
}

async function liveData(tableId: string, identifier: string) {
  const r = await t.database.pool.query('select data from cms_rows where table_id = $1 and identifier = $2', [tableId, identifier]);
  return r.rows.map((x) => x.data);
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  worker = await startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '50', WORKER_BLOCKED_RETRY_MS: '100' }), pino({ level: 'warn' }));
  team = await createTeam(api, 'publisher');
  projectId = (await post('/v1/projects', { name: 'site' })).json().id;
  const table = async (name: string, fields: unknown[]) => {
    const res = await post(`/v1/projects/${projectId}/cms-tables`, { name, fields });
    expect(res.statusCode, res.body).toBe(201);
    return res.json().id as string;
  };
  postsId = await table('posts', [{ name: 'title', type: 'text', required: true }, { name: 'views', type: 'number' }]);
  tagsId = await table('tags', [{ name: 'name', type: 'text', required: true }]);
  const writes = [
    await bulkWrite(postsId, Array.from({ length: POSTS }, (_, i) => ({ op: 'insert', identifier: `p${i}`, data: { title: `Post ${i}`, views: i } }))),
    await bulkWrite(tagsId, Array.from({ length: TAGS }, (_, i) => ({ op: 'insert', identifier: `t${i}`, data: { name: `tag ${i}` } }))),
  ];
  for (const id of writes) expect((await finished(id)).status).toBe('completed');
  for (const data of [{ pages: ['home'] }, { pages: ['home', 'about'], theme: 'dark' }]) {
    const res = await post(`/v1/projects/${projectId}/revisions`, { data });
    expect(res.statusCode).toBe(201);
    revisions.push({ ...res.json(), data });
  }
}, 60_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

describe('project publishes', () => {
  it('publishes the latest revision as version 1 and makes every draft row of every table live', async () => {
    expect(await publishedRows(postsId)).toEqual([]);
    const res = await post(`/v1/projects/${projectId}/publishes`);
    expect(res.statusCode, res.body).toBe(202);
    expect(res.headers.location).toBe(`/v1/jobs/${res.json().id}`);
    expect(res.json()).toMatchObject({ type: 'project.publish', status: 'queued', progress: { done: 0, total: null }, result: null });

    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    expect(job.result).toEqual({ versionId: expect.any(String), version: 1, publishedRows: POSTS + TAGS });
    expect(job.progress).toEqual({ done: POSTS + TAGS, total: POSTS + TAGS });

    const versions = await t.database.pool.query('select id, version, revision_id, data, job_id from project_versions where project_id = $1', [projectId]);
    expect(versions.rows).toEqual([
      { id: job.result.versionId, version: 1, revision_id: revisions[1]!.id, data: revisions[1]!.data, job_id: job.id },
    ]);
    expect(await notLive()).toBe(0);
    const live = await publishedRows(postsId);
    expect(live).toHaveLength(POSTS);
    for (const row of live) expect(row.data).toEqual(row.draftData);
    expect(await publishedRows(tagsId)).toHaveLength(TAGS);
  });

  it('a second publish with nothing changed makes version 2 and changes no row', async () => {
    const before = await t.database.pool.query('select max(updated_at) as at from cms_rows where table_id = $1', [postsId]);
    const job = await publishAndWait({});
    expect(job.result).toEqual({ versionId: expect.any(String), version: 2, publishedRows: 0 });
    expect(job.progress).toEqual({ done: POSTS + TAGS, total: POSTS + TAGS });
    // Rows whose live data is already their draft are not rewritten.
    const after = await t.database.pool.query('select max(updated_at) as at from cms_rows where table_id = $1', [postsId]);
    expect(after.rows[0].at).toEqual(before.rows[0].at);
  });

  it('publishes exactly the 3 rows a bulk update changed, after the bulk write it was accepted behind', async () => {
    const bulkId = await bulkWrite(postsId, [
      { op: 'update', identifier: 'p3', data: { title: 'Edited 3' } },
      { op: 'update', identifier: 'p60', data: { title: 'Edited 60', views: 1 } },
      { op: 'update', identifier: 'p119', data: { title: 'Edited 119' } },
    ]);
    // Accepted at once, with an earlier revision named: it waits for the bulk write on its table.
    const job = await publishAndWait({ revisionId: revisions[0]!.id });
    const bulk = await finished(bulkId);
    expect(new Date(job.startedAt).getTime()).toBeGreaterThanOrEqual(new Date(bulk.finishedAt).getTime());
    expect(job.result).toMatchObject({ version: 3, publishedRows: 3 });
    expect(await liveData(postsId, 'p60')).toEqual([{ title: 'Edited 60', views: 1 }]);
    expect(await notLive()).toBe(0);
    const v = await t.database.pool.query('select revision_id, data from project_versions where id = $1', [job.result.versionId]);
    expect(v.rows[0]).toEqual({ revision_id: revisions[0]!.id, data: revisions[0]!.data });
  });

  it('a deleted row stops being live: its live data goes back to null, which counts as a change', async () => {
    await finished(
      await bulkWrite(tagsId, [
        { op: 'insert', identifier: 'ghost', data: { name: 'never live' } },
        { op: 'delete', identifier: 'ghost' },
        { op: 'delete', identifier: 't5' },
        { op: 'update', identifier: 't6', data: { name: 'renamed' } },
      ]),
    );
    expect(await liveData(tagsId, 't5')).toEqual([{ name: 'tag 5' }]);
    const job = await publishAndWait();
    // t5 unpublished and t6 changed; the ghost was never live, so publishing leaves it as it is.
    expect(job.result).toMatchObject({ version: 4, publishedRows: 2 });
    expect(job.progress).toEqual({ done: POSTS + TAGS, total: POSTS + TAGS });
    expect(await liveData(tagsId, 't5')).toEqual([null]);
    expect(await liveData(tagsId, 'ghost')).toEqual([null]);
    const live = await publishedRows(tagsId);
    expect(live).toHaveLength(TAGS - 1);
    expect(live.find((r) => r.identifier === 't6')!.data).toEqual({ name: 'renamed' });
    expect(live.some((r) => r.identifier === 't5')).toBe(false);

    // Deleted rows that are no longer live are not gone through again.
    const again = await publishAndWait();
    expect(again.result).toMatchObject({ version: 5, publishedRows: 0 });
    expect(again.progress).toEqual({ done: POSTS + TAGS - 1, total: POSTS + TAGS - 1 });
  });

  it('refuses a revision that is not one of the project (400) and a project without revisions (409), queuing nothing', async () => {
    const jobsBefore = await count(t.database, 'jobs');
    const other = (await post('/v1/projects', { name: 'other' })).json().id;
    const otherRevision = (await post(`/v1/projects/${other}/revisions`, { data: { x: 1 } })).json().id;
    for (const revisionId of [otherRevision, '01890000-0000-7000-8000-000000000000']) {
      const err = expectError(await post(`/v1/projects/${projectId}/publishes`, { revisionId }), 400, 'validation_failed');
      expect(err.details).toEqual([{ path: 'body.revisionId', message: expect.any(String) }]);
    }
    expectError(await post(`/v1/projects/${projectId}/publishes`, { revisionId: 'latest' }), 400, 'validation_failed');
    expectError(await post(`/v1/projects/${projectId}/publishes`, { revisionId: revisions[0]!.id, extra: 1 }), 400, 'validation_failed');
    const empty = (await post('/v1/projects', { name: 'empty' })).json().id;
    expectError(await post(`/v1/projects/${empty}/publishes`, {}), 409, 'conflict');
    expect(await count(t.database, 'jobs')).toBe(jobsBefore);
  });

  it("answers 404 for another team's project, as for one that does not exist", async () => {
    const intruder = await createTeam(api, 'intruder');
    const jobsBefore = await count(t.database, 'jobs');
    for (const payload of [undefined, {}, { revisionId: revisions[1]!.id }]) {
      expectError(await post(`/v1/projects/${projectId}/publishes`, payload, {}, intruder.token), 404, 'not_found');
    }
    expectError(await post('/v1/projects/01890000-0000-7000-8000-000000000000/publishes', {}), 404, 'not_found');
    expectError(await post('/v1/projects/not-a-uuid/publishes', {}), 404, 'not_found');
    expectError(await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/publishes` }), 401, 'unauthorized');
    expect(await count(t.database, 'jobs')).toBe(jobsBefore);
  });

  it('replays an Idempotency-Key with the first job, and refuses it with another body (409)', async () => {
    const headers = { 'idempotency-key': 'publish-once' };
    const first = await publish({ revisionId: revisions[1]!.id }, headers);
    const replay = await post(`/v1/projects/${projectId}/publishes`, { revisionId: revisions[1]!.id }, headers);
    expect(replay.statusCode).toBe(200);
    expect(replay.json().id).toBe(first.id);
    expectError(await post(`/v1/projects/${projectId}/publishes`, {}, headers), 409, 'conflict');
    const job = await finished(first.id);
    expect(job.result).toMatchObject({ version: 6, publishedRows: 0 });
    expect(await count(t.database, 'project_versions where project_id = $1', [projectId])).toBe(6);
  });
});

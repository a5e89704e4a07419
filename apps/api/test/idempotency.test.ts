import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { acceptBulkWrite, count, createTable, createWorkspace, expectError } from './support';

let t: TestEnv;
let api: FastifyInstance;
let a: Awaited<ReturnType<typeof createWorkspace>>;
let b: Awaited<ReturnType<typeof createWorkspace>>;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  a = await createWorkspace(api, 'team-a');
  b = await createWorkspace(api, 'team-b');
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

const ops = (title: string) => [{ op: 'insert', data: { title } }];
const key = (k: string) => ({ 'idempotency-key': k });
const jobCount = (teamId: string) => count(t.database, 'jobs where team_id = $1', [teamId]);
const blobCount = () => readdirSync(t.blobDir, { recursive: true }).filter((f) => String(f).endsWith('.ndjson')).length;

describe('Idempotency-Key', () => {
  it('answers a repeat with the same key and body 200 with the same job, and creates nothing', async () => {
    const first = await acceptBulkWrite(api, a.token, a.tableId, ops('one'), key('same-1'));
    expect(first.statusCode, first.body).toBe(202);
    const jobs = await jobCount(a.team.id);
    const blobs = blobCount();

    const again = await acceptBulkWrite(api, a.token, a.tableId, ops('one'), key('same-1'));
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().id).toBe(first.json().id);
    expect(again.json()).toEqual(first.json());
    expect(again.headers.location).toBe(`/v1/jobs/${first.json().id}`);
    expect(await jobCount(a.team.id)).toBe(jobs);
    expect(blobCount()).toBe(blobs);
  });

  it('answers the same key with another body 409 conflict, and creates nothing', async () => {
    const first = await acceptBulkWrite(api, a.token, a.tableId, ops('two'), key('same-2'));
    expect(first.statusCode).toBe(202);
    const jobs = await jobCount(a.team.id);
    expectError(await acceptBulkWrite(api, a.token, a.tableId, ops('something else'), key('same-2')), 409, 'conflict');
    expect(await jobCount(a.team.id)).toBe(jobs);
  });

  it('answers the same key on another route (another table) 409 conflict', async () => {
    const other = await createTable(api, a.token, a.projectId, undefined, 'other');
    expect((await acceptBulkWrite(api, a.token, a.tableId, ops('three'), key('same-3'))).statusCode).toBe(202);
    expectError(await acceptBulkWrite(api, a.token, other, ops('three'), key('same-3')), 409, 'conflict');
  });

  it('creates exactly one job for ten concurrent requests with one key', async () => {
    const jobs = await jobCount(a.team.id);
    const blobs = blobCount();
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => acceptBulkWrite(api, a.token, a.tableId, ops('race'), key('race-key'))),
    );
    const statuses = answers.map((r) => r.statusCode).sort();
    expect(statuses.filter((s) => s === 202), statuses.join()).toHaveLength(1);
    expect(statuses.filter((s) => s === 200), statuses.join()).toHaveLength(9);
    expect(new Set(answers.map((r) => r.json().id)).size).toBe(1);
    expect(await jobCount(a.team.id)).toBe(jobs + 1);
    expect(await count(t.database, 'idempotency_keys where key = $1', ['race-key'])).toBe(1);
    // The losers' stored input was dropped again.
    expect(blobCount()).toBe(blobs + 1);
  });

  it('scopes keys to the team: team B may reuse team A’s key', async () => {
    const fromA = await acceptBulkWrite(api, a.token, a.tableId, ops('shared'), key('shared-key'));
    expect(fromA.statusCode).toBe(202);
    const fromB = await acceptBulkWrite(api, b.token, b.tableId, ops('shared'), key('shared-key'));
    expect(fromB.statusCode, fromB.body).toBe(202);
    expect(fromB.json().id).not.toBe(fromA.json().id);
    // And each team's replay still finds its own job.
    expect((await acceptBulkWrite(api, b.token, b.tableId, ops('shared'), key('shared-key'))).json().id).toBe(fromB.json().id);
    expect((await acceptBulkWrite(api, a.token, a.tableId, ops('shared'), key('shared-key'))).json().id).toBe(fromA.json().id);
  });

  it('still answers a replay after the job was cancelled (the key names the job, whatever its state)', async () => {
    const first = await acceptBulkWrite(api, a.token, a.tableId, ops('cancel me'), key('cancelled-key'));
    await api.inject({ method: 'POST', url: `/v1/jobs/${first.json().id}/cancel`, headers: bearer(a.token) });
    const again = await acceptBulkWrite(api, a.token, a.tableId, ops('cancel me'), key('cancelled-key'));
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ id: first.json().id, status: 'cancelled' });
  });

  it('refuses a key that is not 1 to 255 visible ASCII characters (400)', async () => {
    for (const k of ['x'.repeat(256), 'has space', 'tab\tkey']) {
      expectError(await acceptBulkWrite(api, a.token, a.tableId, ops('bad key'), key(k)), 400, 'validation_failed');
    }
  });

  it('lets a key expire after 24 hours: then it creates a new job', async () => {
    const first = await acceptBulkWrite(api, a.token, a.tableId, ops('old'), key('old-key'));
    await t.database.pool.query(`update idempotency_keys set created_at = now() - interval '25 hours' where key = 'old-key'`);
    const later = await acceptBulkWrite(api, a.token, a.tableId, ops('old'), key('old-key'));
    expect(later.statusCode, later.body).toBe(202);
    expect(later.json().id).not.toBe(first.json().id);
    expect(await count(t.database, 'idempotency_keys where key = $1', ['old-key'])).toBe(1);
  });
});

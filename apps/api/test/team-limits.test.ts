import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createTestEnv, type TestEnv } from '../../../test/helpers';
import { acceptBulkWrite, buildApiWithEnv, count, createTable, createWorkspace, expectError } from './support';

let t: TestEnv;
let api: FastifyInstance;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildApiWithEnv(t, { API_TEAM_MAX_QUEUED: '3', API_TEAM_ENQUEUE_PER_MINUTE: '8' });
});
afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

describe('per-team limits on the enqueue routes', () => {
  it('answers 429 with Retry-After, in the one error shape, past the team’s queued-jobs limit; other teams are unaffected', async () => {
    const a = await createWorkspace(api);
    const b = await createWorkspace(api);
    for (let i = 0; i < 3; i++) expect((await acceptBulkWrite(api, a.token, a.tableId)).statusCode).toBe(202);
    const refused = await acceptBulkWrite(api, a.token, a.tableId);
    const err = expectError(refused, 429, 'rate_limited');
    expect(err.message).toMatch(/queued/);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect(await count(t.database, 'jobs where team_id = $1', [a.team.id])).toBe(3);
    expect((await acceptBulkWrite(api, b.token, b.tableId)).statusCode).toBe(202);

    // Once a queued job has ended, the team may enqueue again.
    await t.database.pool.query(`update jobs set status = 'completed' where id = (select id from jobs where team_id = $1 limit 1)`, [a.team.id]);
    expect((await acceptBulkWrite(api, a.token, a.tableId)).statusCode).toBe(202);
  });

  it('holds the cap exactly under concurrent requests', async () => {
    const c = await createWorkspace(api);
    const answers = await Promise.all(Array.from({ length: 6 }, () => acceptBulkWrite(api, c.token, c.tableId)));
    expect(answers.filter((r) => r.statusCode === 202)).toHaveLength(3);
    expect(answers.filter((r) => r.statusCode === 429)).toHaveLength(3);
    expect(await count(t.database, `jobs where team_id = $1 and status = 'queued'`, [c.team.id])).toBe(3);
  });

  it('a per-team override in the database replaces the default cap', async () => {
    const d = await createWorkspace(api);
    await t.database.pool.query('update teams set max_queued_jobs = 1 where id = $1', [d.team.id]);
    expect((await acceptBulkWrite(api, d.token, d.tableId)).statusCode).toBe(202);
    expectError(await acceptBulkWrite(api, d.token, d.tableId), 429, 'rate_limited');
  });

  it('limits the enqueue rate per team, shared by all of the team’s tokens', async () => {
    const e = await createWorkspace(api);
    await t.database.pool.query('update teams set max_queued_jobs = 1000 where id = $1', [e.team.id]);
    const second = await api.inject({ method: 'POST', url: `/v1/admin/teams/${e.team.id}/tokens`, headers: { authorization: 'Bearer test-admin-token-0123456789' } });
    const otherToken = second.json().token as string;
    const tables = [e.tableId, await createTable(api, e.token, e.projectId)];
    let accepted = 0;
    let refused: Awaited<ReturnType<typeof acceptBulkWrite>> | undefined;
    for (let i = 0; i < 12 && !refused; i++) {
      const r = await acceptBulkWrite(api, i % 2 ? otherToken : e.token, tables[i % 2]!);
      if (r.statusCode === 202) accepted++;
      else refused = r;
    }
    // The window is one minute: at most 8 fit, fewer if the test straddles a window's end.
    expect(accepted).toBeLessThanOrEqual(8);
    expect(refused).toBeDefined();
    const err = expectError(refused!, 429, 'rate_limited');
    expect(err.message).toMatch(/a minute/);
    const after = Number(refused!.headers['retry-after']);
    expect(after).toBeGreaterThan(0);
    expect(after).toBeLessThanOrEqual(60);
  });
});

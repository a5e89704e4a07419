import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { createTeam, expectError } from './support';

let t: TestEnv;
let api: FastifyInstance;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

const teamRoute = { method: 'GET', url: '/v1/jobs' } as const;
const adminRoute = { method: 'POST', url: '/v1/admin/teams', payload: { name: 'x' } } as const;

describe('auth', () => {
  it('answers 401 unauthorized in the one error shape when no token is sent', async () => {
    for (const route of [teamRoute, adminRoute]) {
      const res = await api.inject(route);
      expectError(res, 401, 'unauthorized');
    }
  });

  it('answers 401 to a malformed Authorization header', async () => {
    const team = await createTeam(api);
    for (const authorization of [team.token, `Basic ${team.token}`, 'Bearer', 'Bearer ', `Bearer ${team.token} extra`, `Token ${team.token}`]) {
      const res = await api.inject({ ...teamRoute, headers: { authorization } });
      expectError(res, 401, 'unauthorized');
    }
    const admin = await api.inject({ ...adminRoute, headers: { authorization: ADMIN_TOKEN } });
    expectError(admin, 401, 'unauthorized');
  });

  it('answers 401 to an unknown token on team and admin routes', async () => {
    expectError(await api.inject({ ...teamRoute, headers: bearer('tk_not-a-real-token') }), 401, 'unauthorized');
    expectError(await api.inject({ ...adminRoute, headers: bearer('tk_not-a-real-token') }), 401, 'unauthorized');
  });

  it('answers 403 forbidden to a team token on /v1/admin/*', async () => {
    const team = await createTeam(api);
    expectError(await api.inject({ ...adminRoute, headers: bearer(team.token) }), 403, 'forbidden');
    const tokens = await api.inject({ method: 'POST', url: `/v1/admin/teams/${team.id}/tokens`, headers: bearer(team.token) });
    expectError(tokens, 403, 'forbidden');
    const revoke = await api.inject({ method: 'DELETE', url: `/v1/admin/tokens/${team.tokenId}`, headers: bearer(team.token) });
    expectError(revoke, 403, 'forbidden');
    // Nothing was revoked by the refused request.
    expect((await api.inject({ ...teamRoute, headers: bearer(team.token) })).statusCode).toBe(200);
  });

  it('answers 403 forbidden to the admin token on a team route', async () => {
    expectError(await api.inject({ ...teamRoute, headers: bearer(ADMIN_TOKEN) }), 403, 'forbidden');
    const res = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(ADMIN_TOKEN), payload: { name: 'p' } });
    expectError(res, 403, 'forbidden');
  });

  it('creates a team: 201 {id, name, token, tokenId} and the token works at once', async () => {
    const res = await api.inject({ ...adminRoute, payload: { name: 'acme' }, headers: bearer(ADMIN_TOKEN) });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(Object.keys(body).sort()).toEqual(['id', 'name', 'token', 'tokenId']);
    expect(body).toMatchObject({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: 'acme', tokenId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect(body.token.length).toBeGreaterThanOrEqual(32);
    expect((await api.inject({ ...teamRoute, headers: bearer(body.token) })).statusCode).toBe(200);
  });

  it('refuses a team without a name (400)', async () => {
    const res = await api.inject({ ...adminRoute, payload: { name: '  ' }, headers: bearer(ADMIN_TOKEN) });
    expectError(res, 400, 'validation_failed');
  });

  it('stores tokens hashed: no column of api_tokens holds a plain token', async () => {
    const team = await createTeam(api);
    const extra = (await api.inject({ method: 'POST', url: `/v1/admin/teams/${team.id}/tokens`, headers: bearer(ADMIN_TOKEN) })).json();
    const rows = await t.database.pool.query<{ row: string }>('select row_to_json(a)::text as row from api_tokens a where team_id = $1', [team.id]);
    expect(rows.rows).toHaveLength(2);
    for (const { row } of rows.rows) {
      expect(row).not.toContain(team.token);
      expect(row).not.toContain(extra.token);
      expect(row).not.toContain(team.token.slice(3, 20));
    }
  });

  it('issues a further token for a team: 201 {id, token}, and it acts for the same team', async () => {
    const team = await createTeam(api);
    const res = await api.inject({ method: 'POST', url: `/v1/admin/teams/${team.id}/tokens`, headers: bearer(ADMIN_TOKEN) });
    expect(res.statusCode).toBe(201);
    const extra = res.json();
    expect(Object.keys(extra).sort()).toEqual(['id', 'token']);
    expect(extra.token).not.toBe(team.token);
    // A project made with one token is the team's, so the other token sees it.
    const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(extra.token), payload: { name: 'p' } });
    expect(project.statusCode).toBe(201);
    const rev = await api.inject({
      method: 'POST',
      url: `/v1/projects/${project.json().id}/revisions`,
      headers: bearer(team.token),
      payload: { data: {} },
    });
    expect(rev.statusCode).toBe(201);
  });

  it('revokes a token: 204, it answers 401 from then on, the team’s other token still works', async () => {
    const team = await createTeam(api);
    const extra = (await api.inject({ method: 'POST', url: `/v1/admin/teams/${team.id}/tokens`, headers: bearer(ADMIN_TOKEN) })).json();
    expect((await api.inject({ ...teamRoute, headers: bearer(extra.token) })).statusCode).toBe(200);

    const res = await api.inject({ method: 'DELETE', url: `/v1/admin/tokens/${extra.id}`, headers: bearer(ADMIN_TOKEN) });
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expectError(await api.inject({ ...teamRoute, headers: bearer(extra.token) }), 401, 'unauthorized');
    expect((await api.inject({ ...teamRoute, headers: bearer(team.token) })).statusCode).toBe(200);

    // The first token (its id is the team's tokenId) can be revoked the same way.
    const first = await api.inject({ method: 'DELETE', url: `/v1/admin/tokens/${team.tokenId}`, headers: bearer(ADMIN_TOKEN) });
    expect(first.statusCode).toBe(204);
    expectError(await api.inject({ ...teamRoute, headers: bearer(team.token) }), 401, 'unauthorized');
  });

  it('answers 404 not_found to unknown or malformed team and token ids', async () => {
    const unknown = '01890000-0000-7000-8000-000000000000';
    for (const id of [unknown, 'nope']) {
      expectError(await api.inject({ method: 'POST', url: `/v1/admin/teams/${id}/tokens`, headers: bearer(ADMIN_TOKEN) }), 404, 'not_found');
      expectError(await api.inject({ method: 'DELETE', url: `/v1/admin/tokens/${id}`, headers: bearer(ADMIN_TOKEN) }), 404, 'not_found');
    }
  });
});

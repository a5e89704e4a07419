import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { createTeam } from './support';

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

/** Every route of shared/API.md, in OpenAPI's path syntax. */
const CONTRACT: [method: string, path: string][] = [
  ['post', '/v1/admin/teams'],
  ['post', '/v1/admin/teams/{teamId}/tokens'],
  ['delete', '/v1/admin/tokens/{tokenId}'],
  ['post', '/v1/projects'],
  ['post', '/v1/projects/{projectId}/revisions'],
  ['post', '/v1/projects/{projectId}/cms-tables'],
  ['get', '/v1/cms-tables/{tableId}/rows'],
  ['get', '/v1/cms-tables/{tableId}/rows/{rowId}'],
  ['post', '/v1/cms-tables/{tableId}/imports'],
  ['post', '/v1/cms-tables/{tableId}/exports'],
  ['post', '/v1/cms-tables/{tableId}/bulk-writes'],
  ['post', '/v1/projects/{projectId}/publishes'],
  ['get', '/v1/jobs/{id}'],
  ['get', '/v1/jobs'],
  ['post', '/v1/jobs/{id}/cancel'],
  ['post', '/v1/jobs/{id}/retry'],
  ['get', '/v1/jobs/{id}/download'],
];

describe('OpenAPI document and reference', () => {
  it('serves an OpenAPI document at /docs/json listing every route of the contract, without a token', async () => {
    const res = await api.inject({ method: 'GET', url: '/docs/json' });
    expect(res.statusCode, res.body.slice(0, 500)).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toMatch(/^3\./);
    expect(doc.info.title).toEqual(expect.any(String));
    for (const [method, path] of CONTRACT) {
      expect(doc.paths[path]?.[method], `${method.toUpperCase()} ${path}`).toBeDefined();
    }
  });

  it('describes request bodies and query parameters from the route schemas', async () => {
    const doc = (await api.inject({ method: 'GET', url: '/docs/json' })).json();
    const bulk = doc.paths['/v1/cms-tables/{tableId}/bulk-writes'].post;
    expect(bulk.requestBody.content['application/json'].schema).toBeDefined();
    const rows = doc.paths['/v1/cms-tables/{tableId}/rows'].get;
    expect(rows.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['limit', 'cursor', 'published', 'tableId']));
  });

  it('serves the browsable reference at /docs (200, or a redirect to the UI)', async () => {
    const res = await api.inject({ method: 'GET', url: '/docs' });
    expect([200, 301, 302, 303, 307, 308]).toContain(res.statusCode);
    if (res.statusCode !== 200) {
      const ui = await api.inject({ method: 'GET', url: new URL(res.headers.location as string, 'http://x/docs').pathname });
      expect(ui.statusCode).toBe(200);
      expect(ui.headers['content-type']).toMatch(/text\/html/);
    } else {
      expect(res.headers['content-type']).toMatch(/text\/html/);
    }
  });
});

describe('operations routes', () => {
  it('answers /healthz 200 without a token', async () => {
    const res = await api.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
  });

  it('answers /readyz 200 while Redis and PostgreSQL answer', async () => {
    // The API's Redis client connects in the background after the build (server.ts waits for it
    // before listening), so the first probes may still say "not ready".
    const res = await waitFor(async () => {
      const r = await api.inject({ method: 'GET', url: '/readyz' });
      return r.statusCode === 200 ? r : undefined;
    }, { timeoutMs: 5_000, intervalMs: 50, what: '/readyz to answer 200' });
    expect(res.json()).toEqual({ status: 'ready' });
  });

  it('counts requests of every route, not only its own, in /metrics (Prometheus text)', async () => {
    const team = await createTeam(api);
    await api.inject({ method: 'GET', url: '/v1/jobs', headers: bearer(team.token) });
    await api.inject({ method: 'GET', url: '/v1/jobs' });
    const res = await api.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toMatch(/api_http_requests_total\{method="GET",route="\/v1\/jobs",status="200"\} 1/);
    expect(res.body).toMatch(/api_http_requests_total\{method="GET",route="\/v1\/jobs",status="401"\} 1/);
    expect(res.body).toMatch(/api_http_requests_total\{method="POST",route="\/v1\/admin\/teams",status="201"\} 1/);
  });
});

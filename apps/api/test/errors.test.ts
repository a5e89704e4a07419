import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { count, createTeam, expectError } from './support';

const LIMIT = 1024;
let t: TestEnv;
let api: FastifyInstance;
let token: string;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t, { API_BODY_LIMIT_BYTES: String(LIMIT) });
  token = (await createTeam(api)).token;
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

function postProject(body: string | Buffer, headers: Record<string, string> = {}) {
  return api.inject({
    method: 'POST',
    url: '/v1/projects',
    headers: { ...bearer(token), 'content-type': 'application/json', ...headers },
    payload: body,
  });
}

describe('errors in one shape', () => {
  it('answers 400 validation_failed to invalid JSON', async () => {
    for (const body of ['{"name": ', '{name: "x"}', 'nul']) {
      expectError(await postProject(body), 400, 'validation_failed');
    }
  });

  it('answers 400 validation_failed to an empty JSON body on a route that takes one', async () => {
    expectError(await postProject(''), 400, 'validation_failed');
  });

  it('treats an empty application/json body as no body on a route that takes none', async () => {
    const project = await postProject(JSON.stringify({ name: 'to publish' }));
    await api.inject({
      method: 'POST',
      url: `/v1/projects/${project.json().id}/revisions`,
      headers: bearer(token),
      payload: { data: { page: 'home' } },
    });
    const res = await api.inject({
      method: 'POST',
      url: `/v1/projects/${project.json().id}/publishes`,
      headers: { ...bearer(token), 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(202);
    expect(res.json().type).toBe('project.publish');
  });

  it('refuses JSON that would poison prototypes (400)', async () => {
    expectError(await postProject('{"name":"x","__proto__":{"admin":true}}'), 400, 'validation_failed');
  });

  it('answers 415 unsupported_media_type to a content type a JSON route does not take', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'text/csv', 'application/xml']) {
      const res = await postProject(JSON.stringify({ name: 'x' }), { 'content-type': type });
      expectError(res, 415, 'unsupported_media_type');
    }
    expect(await count(t.database, `projects where name = 'x'`)).toBe(0);
  });

  it('answers 415 to a body sent without a content type', async () => {
    const res = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: '{"name":"x"}' });
    expectError(res, 415, 'unsupported_media_type');
  });

  it('answers 413 payload_too_large to a JSON body over API_BODY_LIMIT_BYTES', async () => {
    const res = await postProject(JSON.stringify({ name: 'x'.repeat(LIMIT) }));
    expectError(res, 413, 'payload_too_large');
    // Just under the limit is fine (the limit is on bytes, not a rough estimate).
    const ok = await postProject(JSON.stringify({ name: 'y'.repeat(150) }).padEnd(LIMIT, ' '));
    expect(ok.statusCode, ok.body).toBe(201);
  });

  it('accepts a gzip-encoded body and decodes it', async () => {
    const res = await postProject(gzipSync(JSON.stringify({ name: 'zipped' })), { 'content-encoding': 'gzip' });
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().name).toBe('zipped');
    const upper = await postProject(gzipSync(JSON.stringify({ name: 'zipped too' })), { 'content-encoding': 'GZIP' });
    expect(upper.statusCode, upper.body).toBe(201);
  });

  it('answers 413 to a small gzip body that inflates past the limit', async () => {
    const bomb = gzipSync(JSON.stringify({ name: 'x', pad: ' '.repeat(200 * LIMIT) }));
    expect(bomb.length).toBeLessThan(LIMIT);
    expectError(await postProject(bomb, { 'content-encoding': 'gzip' }), 413, 'payload_too_large');
  });

  it('stops decoding a gzip bomb at the limit: after the 413 no CPU goes on inflating the rest', async () => {
    // 200 gzip members of 10 MB of spaces: 2 MB on the wire, 2 GB decoded.
    const member = gzipSync(Buffer.alloc(10_000_000, 32), { level: 9 });
    const bomb = Buffer.concat(Array.from({ length: 200 }, () => member));
    const res = await postProject(bomb, { 'content-encoding': 'gzip' });
    expectError(res, 413, 'payload_too_large');
    const cpu = process.cpuUsage();
    await new Promise((r) => setTimeout(r, 500));
    const used = process.cpuUsage(cpu);
    // Inflating the rest keeps about one core busy (~450 ms of this 500 ms window); stopped, ~10 ms.
    expect((used.user + used.system) / 1000).toBeLessThan(200);
  });

  it('answers 400 to a corrupt gzip body', async () => {
    const good = gzipSync(JSON.stringify({ name: 'x' }));
    const corrupt = Buffer.concat([good.subarray(0, 10), Buffer.from('this is not deflate data at all'), good.subarray(10)]);
    expectError(await postProject(corrupt, { 'content-encoding': 'gzip' }), 400, 'validation_failed');
    expectError(await postProject(Buffer.from('{"name":"plain"}'), { 'content-encoding': 'gzip' }), 400, 'validation_failed');
    // Truncated: the stream ends before the gzip trailer.
    expectError(await postProject(good.subarray(0, good.length - 6), { 'content-encoding': 'gzip' }), 400, 'validation_failed');
  });

  it('answers 415 to an unknown Content-Encoding', async () => {
    for (const enc of ['br', 'deflate', 'compress', 'gzip, br']) {
      expectError(await postProject(JSON.stringify({ name: 'x' }), { 'content-encoding': enc }), 415, 'unsupported_media_type');
    }
  });

  it('answers 404 not_found in the shape to an unknown route or method', async () => {
    expectError(await api.inject({ method: 'GET', url: '/v1/nothing-here' }), 404, 'not_found');
    expectError(await api.inject({ method: 'GET', url: '/v2/projects', headers: bearer(token) }), 404, 'not_found');
    expectError(await api.inject({ method: 'DELETE', url: '/v1/projects', headers: bearer(token) }), 404, 'not_found');
  });

  it('gives zod validation errors `details` naming the offending paths', async () => {
    const res = await postProject(JSON.stringify({ name: 7, other: true }));
    const err = expectError(res, 400, 'validation_failed');
    expect(err.details).toEqual(
      expect.arrayContaining([expect.objectContaining({ path: expect.stringMatching(/^body/), message: expect.any(String) })]),
    );
    const query = await api.inject({ method: 'GET', url: '/v1/jobs?limit=9999', headers: bearer(token) });
    const qErr = expectError(query, 400, 'validation_failed');
    expect(qErr.details).toEqual([expect.objectContaining({ path: expect.stringMatching(/^querystring\.limit/) })]);
  });

  it('answers a body-less POST (no content type) to a route without a body schema', async () => {
    const res = await api.inject({ method: 'POST', url: '/v1/jobs/01890000-0000-7000-8000-000000000000/cancel', headers: bearer(token) });
    expectError(res, 404, 'not_found');
  });
});

import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { createDatabase, type Database } from '@platform/db';
import { createRedis, FsBlobStore, Producer } from '@platform/jobs';
import { ADMIN_TOKEN, bearer, type TestEnv } from '../../../test/helpers';
import { buildApp } from '../src/app';
import { loadConfig } from '../src/config';

/** Shared set-up steps of the API contract tests: every step goes through the HTTP contract. */

/**
 * Like `buildTestApi`, but the connections follow the configuration: `buildTestApi` connects to
 * the test env's Redis and Postgres whatever `REDIS_URL` / `DATABASE_URL` it is given, so it
 * cannot build an API whose Redis is down.
 */
export async function buildApiWithEnv(t: TestEnv, env: Record<string, string>): Promise<FastifyInstance> {
  const config = loadConfig({ ...t.env, ADMIN_TOKEN, API_PORT: '0', ...env });
  const redis = createRedis(config.redisUrl, 'producer');
  const database = createDatabase({ url: config.databaseUrl, max: 5, applicationName: 'api-test' });
  const producer = new Producer(redis, config.queuePrefix, database.db);
  return buildApp({ config, database, redis, producer, blobs: new FsBlobStore(config.blobDir) }, { ownsDeps: true });
}

export interface Team {
  id: string;
  name: string;
  token: string;
  tokenId: string;
}

export async function createTeam(api: FastifyInstance, name = `team-${randomUUID().slice(0, 8)}`): Promise<Team> {
  const res = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name } });
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

export async function createProject(api: FastifyInstance, token: string, name = 'site'): Promise<string> {
  const res = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name } });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().id;
}

export const POST_FIELDS = [
  { name: 'title', type: 'text', required: true },
  { name: 'views', type: 'number' },
];

export async function createTable(
  api: FastifyInstance,
  token: string,
  projectId: string,
  fields: unknown[] = POST_FIELDS,
  name = 'posts',
): Promise<string> {
  const res = await api.inject({
    method: 'POST',
    url: `/v1/projects/${projectId}/cms-tables`,
    headers: bearer(token),
    payload: { name, fields },
  });
  expect(res.statusCode, res.body).toBe(201);
  return res.json().id;
}

/** A team with a project and a `posts` table, ready for row and job requests. */
export async function createWorkspace(api: FastifyInstance, name?: string) {
  const team = await createTeam(api, name);
  const projectId = await createProject(api, team.token);
  const tableId = await createTable(api, team.token, projectId);
  return { team, token: team.token, projectId, tableId };
}

/** Accepts a small bulk write (no worker runs in most files, so the job stays queued). */
export async function acceptBulkWrite(
  api: FastifyInstance,
  token: string,
  tableId: string,
  operations: unknown[] = [{ op: 'insert', data: { title: 'hello' } }],
  headers: Record<string, string> = {},
) {
  return api.inject({
    method: 'POST',
    url: `/v1/cms-tables/${tableId}/bulk-writes`,
    headers: { ...bearer(token), ...headers },
    payload: { operations },
  });
}

export async function queuedJob(api: FastifyInstance, token: string, tableId: string): Promise<{ id: string; [k: string]: unknown }> {
  const res = await acceptBulkWrite(api, token, tableId);
  expect(res.statusCode, res.body).toBe(202);
  return res.json();
}

/** Asserts the contract's one error shape, with the given status and code. */
export function expectError(res: LightMyRequestResponse, status: number, code: string) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  const body = res.json();
  expect(Object.keys(body)).toEqual(['error']);
  expect(body.error).toEqual(expect.objectContaining({ code, message: expect.any(String) }));
  expect(body.error.message.length).toBeGreaterThan(0);
  return body.error as { code: string; message: string; details?: unknown[]; [k: string]: unknown };
}

export async function count(database: Database, sql: string, params: unknown[] = []): Promise<number> {
  const r = await database.pool.query<{ n: number }>(`select count(*)::int as n from ${sql}`, params);
  return r.rows[0]!.n;
}

/** Inserts rows straight into a table (tests of listing need many rows and live `data`). */
export async function insertRows(
  database: Database,
  table: { id: string; teamId: string },
  rows: { id?: string; identifier: string; draftData: Record<string, unknown>; data?: Record<string, unknown> | null; deleted?: boolean }[],
): Promise<string[]> {
  const ids: string[] = [];
  for (const r of rows) {
    const id = r.id ?? randomUUID();
    ids.push(id);
    await database.pool.query(
      `insert into cms_rows (id, table_id, team_id, identifier, draft_data, data, deleted_at)
       values ($1, $2, $3, $4, $5, $6, $7)`,
      [id, table.id, table.teamId, r.identifier, JSON.stringify(r.draftData), r.data ? JSON.stringify(r.data) : null, r.deleted ? new Date() : null],
    );
  }
  return ids;
}

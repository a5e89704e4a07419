import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { expect } from 'vitest';
import { createRedis, waitReady } from '@platform/jobs';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';

/**
 * A worker test's world: the file's database and queue prefix, the API in-process, a Redis
 * connection of its own, and one team with one project whose bulk writes the tests submit.
 */
export interface TeamWorld {
  t: TestEnv;
  api: FastifyInstance;
  redis: Redis;
  /** A bulk write of `ops` numbered inserts on a table of its own (so jobs may run at once); the job id. */
  bulkWrite(ops: number): Promise<string>;
  close(): Promise<void>;
}

export async function openTeamWorld(teamName: string): Promise<TeamWorld> {
  const t = await createTestEnv();
  const api = await buildTestApi(t);
  const redis = createRedis(t.redisUrl, 'producer');
  await waitReady(redis);
  const token: string = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: teamName } })).json().token;
  const projectId: string = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
  let tables = 0;
  return {
    t,
    api,
    redis,
    async bulkWrite(ops) {
      const table = await api.inject({
        method: 'POST',
        url: `/v1/projects/${projectId}/cms-tables`,
        headers: bearer(token),
        payload: { name: `t${++tables}`, fields: [{ name: 'n', type: 'number' }] },
      });
      const operations = Array.from({ length: ops }, (_, k) => ({ op: 'insert', data: { n: k } }));
      const r = await api.inject({ method: 'POST', url: `/v1/cms-tables/${table.json().id}/bulk-writes`, headers: bearer(token), payload: { operations } });
      expect(r.statusCode, r.body).toBe(202);
      return r.json().id;
    },
    async close() {
      redis.disconnect();
      await api.close();
      await t.cleanup();
    },
  };
}

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { runMigrations } from '@platform/db';
import { TEMPLATE_DB, withDatabase } from '@platform/db/testing';
import { hasRedisServer, REDIS_INSTALL_HINT, startPostgres, startRedis } from '../scripts/lib/services';


/** Starts one throwaway PostgreSQL and Redis for the whole run and migrates the template database. */
export default async function setup(project: TestProject) {
  if (!hasRedisServer()) throw new Error(REDIS_INSTALL_HINT);
  const root = mkdtempSync(path.join(os.tmpdir(), 'platform-test-'));
  const [postgres, redis] = await Promise.all([
    startPostgres({ dir: path.join(root, 'pg'), persistent: false, fsync: false }),
    startRedis({ dir: path.join(root, 'redis'), persistent: false }),
  ]);
  const admin = new pg.Client({ connectionString: postgres.url });
  await admin.connect();
  await admin.query(`create database ${TEMPLATE_DB}`);
  await admin.end();
  await runMigrations(withDatabase(postgres.url, TEMPLATE_DB));

  project.provide('pgAdminUrl', postgres.url);
  project.provide('redisUrl', redis.url);
  project.provide('redisPort', redis.port);

  return async () => {
    await redis.stop();
    await postgres.stop();
    rmSync(root, { recursive: true, force: true });
  };
}

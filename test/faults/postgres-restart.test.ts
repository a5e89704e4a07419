import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, inject } from 'vitest';
import { createDatabase, runMigrations, type Database } from '@platform/db';
import { startPostgres, type PostgresServer } from '../../scripts/lib/services';
import { waitFor } from '../helpers';
import { figure } from './figures';
import {
  chunkFigures,
  createTable,
  createWorkspace,
  Fleet,
  jobState,
  ndjsonFile,
  postImport,
  sleep,
  startApi,
  tableFigures,
  waitEnded,
  type ApiProcess,
  type Workspace,
} from './support';

/**
 * PostgreSQL restarted mid-import, for real: this file runs its own server (the shared one serves
 * every other file), stops it and starts it again on the same data folder and port.
 */
let root: string;
let pgDir: string;
let server: PostgresServer;
let database: Database;
let env: Record<string, string>;
let api: ApiProcess;
let ws: Workspace;
const fleet = new Fleet(() => ({
  ...env,
  WORKER_PORT: '0',
  WORKER_QUEUES: 'cms-import',
  WORKER_CHUNK_SIZE: '2000',
  WORKER_LOCK_DURATION_MS: '5000',
  WORKER_STALLED_INTERVAL_MS: '2000',
  LOG_LEVEL: 'info',
}));

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'fault-pg-'));
  pgDir = path.join(root, 'pg');
  server = await startPostgres({ dir: pgDir, persistent: true, fsync: false });
  await runMigrations(server.url);
  database = createDatabase({ url: server.url, max: 3, applicationName: 'fault-test' });
  const blobDir = path.join(root, 'blobs');
  mkdirSync(blobDir);
  env = {
    DATABASE_URL: server.url,
    REDIS_URL: inject('redisUrl'),
    QUEUE_PREFIX: `{f${randomBytes(4).toString('hex')}}`,
    BLOB_DIR: blobDir,
    LOG_LEVEL: 'warn',
    WORKER_CHUNK_BUDGET_MS: '0',
  };
  api = await startApi(env);
  ws = await createWorkspace(api, 'pg-restart');
}, 120_000);

afterEach(({ task }) => {
  // The workers' own account of a failure (LOG_LEVEL info), before they are killed and forgotten.
  if (task.result?.state === 'fail') {
    const lines = fleet.output().split('\n').filter((l) => l.trim() !== '');
    console.error(`worker output (last ${Math.min(lines.length, 80)} of ${lines.length} lines):\n${lines.slice(-80).join('\n')}`);
  }
  return fleet.killAll();
});

afterAll(async () => {
  await fleet.killAll();
  await api?.stop();
  await database?.close();
  await server?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('PostgreSQL restart', () => {
  // Once quarantined in CI (the job never moved after the restart): a restart that caught a chunk
  // transaction crashed the only worker (see packages/db/src/client.ts).
  it('a PostgreSQL restart mid-import: the API answers 503 meanwhile, the job moves again within a minute and ends exact', async () => {
    const ROWS = 100_000;
    fleet.start();
    const id = await postImport(api, ws.token, ws.tableId, ndjsonFile(ROWS, 'r-'), 'format=ndjson&onError=skip');
    await waitFor(async () => (await jobState(database, id)).done >= 20_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress' });

    await server.stop();
    const downAt = Date.now();
    let t0 = Date.now();
    const read = await api.call('GET', `/v1/jobs/${id}`, { token: ws.token });
    const readMs = Date.now() - t0;
    t0 = Date.now();
    const ready = await api.call('GET', '/readyz');
    const readyMs = Date.now() - t0;
    figure(
      'PostgreSQL down: GET job and /readyz',
      `${read.status} ${read.json().error?.code} in ${readMs} ms, /readyz ${ready.status} in ${readyMs} ms`,
      '503 dependency_unavailable, /readyz 503',
      read.status === 503 && read.json().error?.code === 'dependency_unavailable' && ready.status === 503,
    );
    await sleep(Math.max(0, 5_000 - (Date.now() - downAt)));
    server = await startPostgres({ dir: pgDir, port: server.port, persistent: true, fsync: false });
    const upAt = Date.now();
    const doneAtUp = (await jobState(database, id)).done;
    let movedMs: number | undefined;
    try {
      movedMs = await waitFor(async () => {
        const j = await jobState(database, id).catch(() => undefined);
        return j && (j.done > doneAtUp || j.status !== 'active') ? Date.now() - upAt : undefined;
      }, { timeoutMs: 120_000, intervalMs: 100, what: 'the job to move again' });
    } catch {
      // recorded below
    }
    const done = await waitEnded(database, id, 180_000);
    const rows = await tableFigures(database, ws.tableId);
    const chunks = await chunkFigures(database, id);
    figure(
      `PostgreSQL restart (down ${((upAt - downAt) / 1000).toFixed(1)} s): the job moves again after it is back`,
      movedMs === undefined ? 'never (over 120 s)' : `${(movedMs / 1000).toFixed(1)} s`,
      '< 60 s',
      movedMs !== undefined && movedMs < 60_000,
    );
    const held = figure(
      'PostgreSQL restart: the job',
      `${done.status}${done.status !== 'completed' && done.error ? ` (${done.error.code}: ${done.error.message})` : ''}, ${rows.n} rows, ${rows.n - rows.idents} duplicates, chunks ${chunks.contiguous ? 'contiguous' : 'GAPS'}, attempts ${done.attempts}`,
      `completed, ${ROWS} rows, 0 duplicates, chunks contiguous`,
      done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS && chunks.contiguous && chunks.rows === ROWS,
    );
    expect(read.status).toBe(503);
    expect(movedMs).toBeLessThan(60_000);
    expect(held).toBe(true);
  }, 300_000);

  it('a PostgreSQL outage of 45 s, longer than the retry schedule: the job waits it out using no attempt and ends exact', async () => {
    const ROWS = 60_000;
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'long-outage');
    fleet.start();
    const id = await postImport(api, ws.token, tableId, ndjsonFile(ROWS, 'l-'), 'format=ndjson&onError=skip');
    await waitFor(async () => (await jobState(database, id)).done >= 10_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress' });
    const before = await jobState(database, id);

    await server.stop();
    const downAt = Date.now();
    // 5 attempts with 2 s exponential backoff are spent in about 30 s: this outage outlasts them.
    await sleep(45_000);
    server = await startPostgres({ dir: pgDir, port: server.port, persistent: true, fsync: false });
    const upAt = Date.now();
    const done = await waitEnded(database, id, 180_000);
    const rows = await tableFigures(database, tableId);
    const chunks = await chunkFigures(database, id);
    const held = figure(
      `PostgreSQL outage of ${((upAt - downAt) / 1000).toFixed(0)} s (longer than the retry schedule): the job`,
      `${done.status}${done.status !== 'completed' && done.error ? ` (${done.error.code}: ${done.error.message})` : ''} ${((Date.now() - upAt) / 1000).toFixed(1)} s after the restart, ${rows.n} rows, ${rows.n - rows.idents} duplicates, chunks ${chunks.contiguous ? 'contiguous' : 'GAPS'}, attempts ${before.attempts} → ${done.attempts}`,
      `completed, ${ROWS} rows, 0 duplicates, chunks contiguous, no attempt used`,
      done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS && chunks.contiguous && chunks.rows === ROWS && done.attempts === before.attempts,
    );
    expect(held).toBe(true);
  }, 300_000);
});

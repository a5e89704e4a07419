import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type RedisServer } from '../../scripts/lib/services';
import { ADMIN_TOKEN, createTestEnv, waitFor, type TestEnv } from '../helpers';
import { figure } from './figures';
import {
  createTable,
  createWorkspace,
  Fleet,
  jobState,
  keysHoldingSecrets,
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
 * Redis restarted for real (5 s, 30 s and 120 s outages) under an idle worker and a busy one: no
 * job added before or after is lost, workers consume again within 30 s of Redis returning, and
 * while it is down the API answers 503 within 1 s. This file runs its own redis-server.
 */
let t: TestEnv;
let redis: RedisServer;
let redisDir: string;
let api: ApiProcess;
let ws: Workspace;
const tokens: string[] = [];
const fleet = new Fleet(() => ({
  ...t.env,
  REDIS_URL: redis.url,
  WORKER_PORT: '0',
  WORKER_LOCK_DURATION_MS: '5000',
  WORKER_STALLED_INTERVAL_MS: '2000',
  WORKER_CHUNK_SIZE: '2000',
  LOG_LEVEL: 'info',
}));

beforeAll(async () => {
  t = await createTestEnv();
  redisDir = mkdtempSync(path.join(os.tmpdir(), 'fault-redis-'));
  redis = await startRedis({ dir: redisDir });
  api = await startApi({ ...t.env, REDIS_URL: redis.url });
  ws = await createWorkspace(api, 'redis-outages');
  tokens.push(ws.token);
  // The idle worker drains bulk writes (none are queued during the outages); the busy one imports.
  fleet.start({ WORKER_QUEUES: 'cms-bulk-write' });
  fleet.start({ WORKER_QUEUES: 'cms-import' });
});

afterEach(() => {
  // A worker that died would make the next outage meaningless.
  expect(fleet.alive().length).toBe(2);
});

afterAll(async () => {
  await fleet.killAll();
  await api?.stop();
  await redis?.stop();
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  await t?.cleanup();
});

const bulkWrite = (tableId: string, n: number, prefix: string) =>
  api.call('POST', `/v1/cms-tables/${tableId}/bulk-writes`, {
    token: ws.token,
    json: { operations: Array.from({ length: n }, (_, i) => ({ op: 'insert', identifier: `${prefix}${i}`, data: { title: `t${i}`, views: i } })) },
  });

describe('Redis restarts', () => {
  for (const seconds of [5, 30, 120]) {
    it(`a ${seconds} s Redis outage under an idle and a busy worker loses no job; both consume again within 30 s`, async () => {
      const tableId = await createTable(api, ws.token, ws.projectId, undefined, `big-${seconds}`);
      const BIG = 150_000;
      const big = await postImport(api, ws.token, tableId, ndjsonFile(BIG, `b${seconds}-`), 'format=ndjson&onError=skip');
      // Queued behind the big import (same table): they wait in Redis through the outage.
      const waiting: string[] = [];
      for (let i = 0; i < 5; i++) {
        waiting.push(await postImport(api, ws.token, tableId, ndjsonFile(100, `w${seconds}-${i}-`), 'format=ndjson&onError=skip'));
      }
      const other = await createTable(api, ws.token, ws.projectId, undefined, `other-${seconds}`);
      const before = await bulkWrite(other, 100, 'before-');
      expect(before.status, before.body).toBe(202);
      await waitEnded(t.database, before.json().id, 60_000);
      await waitFor(async () => (await jobState(t.database, big)).done >= 20_000, { timeoutMs: 60_000, intervalMs: 20, what: 'the big import to be busy' });

      await redis.stop();
      const downAt = Date.now();
      // While Redis is down: a heavy request is refused at once in the error shape, nothing queued.
      let t0 = Date.now();
      const refused = await bulkWrite(other, 10, 'refused-');
      const refusedMs = Date.now() - t0;
      t0 = Date.now();
      const ready = await api.call('GET', '/readyz');
      const readyMs = Date.now() - t0;
      const jobRead = await api.call('GET', `/v1/jobs/${big}`, { token: ws.token });
      const queuedLeft = (await t.database.pool.query(`select count(*)::int as n from jobs where team_id = $1 and status = 'queued' and payload->>'tableId' = $2`, [ws.teamId, other])).rows[0].n;
      figure(
        `Redis down (${seconds} s): bulk write, /readyz, GET job`,
        `${refused.status} ${refused.json().error?.code} in ${refusedMs} ms, /readyz ${ready.status} in ${readyMs} ms, GET job ${jobRead.status}, ${queuedLeft} left queued`,
        '503 dependency_unavailable in < 1000 ms, /readyz 503, GET job 200, 0 left queued',
        refused.status === 503 && refused.json().error?.code === 'dependency_unavailable' && refusedMs < 1_000 && ready.status === 503 && readyMs < 1_000 && jobRead.status === 200 && queuedLeft === 0,
      );
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBeDefined();
      expect(refusedMs).toBeLessThan(1_000);
      expect(ready.status).toBe(503);

      await sleep(Math.max(0, seconds * 1000 - (Date.now() - downAt)));
      await redis.restart();
      const backAt = Date.now();
      // A chunk in hand at the stop may have committed during the outage: the baseline is now.
      const doneAtBack = (await jobState(t.database, big)).done;
      // Busy: the import moves again. Idle: a job added now completes.
      const busyBack = waitFor(async () => {
        const j = await jobState(t.database, big);
        return Number(j.done) > Number(doneAtBack) || j.status === 'completed' ? Date.now() - backAt : undefined;
      }, { timeoutMs: 60_000, intervalMs: 50, what: 'the busy worker to move again' });
      const afterId = await waitFor(async () => {
        const r = await bulkWrite(other, 100, `after-${seconds}-`);
        return r.status === 202 ? (r.json().id as string) : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200, what: 'the API to enqueue again' });
      await waitEnded(t.database, afterId, 60_000);
      const idleMs = Date.now() - backAt;
      const busyMs = await busyBack;
      const afterImport = await postImport(api, ws.token, other, ndjsonFile(1_000, `ai${seconds}-`), 'format=ndjson&onError=skip');

      const all = [big, ...waiting, before.json().id, afterId, afterImport];
      const ended = await Promise.all(all.map((id) => waitEnded(t.database, id, 180_000)));
      const completed = ended.filter((j) => j.status === 'completed').length;
      const bigRows = await tableFigures(t.database, tableId);
      const expectRows = BIG + 5 * 100;
      figure(
        `Redis back after ${seconds} s: consuming again (idle worker / busy worker)`,
        `${(idleMs / 1000).toFixed(1)} s / ${(busyMs / 1000).toFixed(1)} s`,
        '< 30 s / < 30 s',
        idleMs < 30_000 && busyMs < 30_000,
      );
      const held = figure(
        `Redis outage of ${seconds} s: jobs added before and after, rows`,
        `${completed}/${all.length} completed; ${bigRows.n} rows, ${bigRows.n - bigRows.idents} duplicates`,
        `${all.length}/${all.length} completed; ${expectRows} rows, 0 duplicates`,
        completed === all.length && bigRows.n === expectRows && bigRows.idents === expectRows,
      );
      expect(idleMs).toBeLessThan(30_000);
      expect(busyMs).toBeLessThan(30_000);
      expect(held, JSON.stringify(ended.filter((j) => j.status !== 'completed'))).toBe(true);
    }, (seconds + 240) * 1000);
  }

  it('no team token or the admin token is readable in Redis after the outages', async () => {
    const { scanned, leaks } = await keysHoldingSecrets(redis.url, '*', [...tokens, ADMIN_TOKEN]);
    const held = figure('secrets in Redis after the outages (every key)', `${leaks.length} keys of ${scanned}`, `0 keys of ${scanned}`, leaks.length === 0 && scanned > 0);
    expect(held, leaks.join(', ')).toBe(true);
  });
});

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { runMigrations } from '@platform/db';
import { createQueue, createRedis, QUEUE_NAMES } from '@platform/jobs';
import { loadConfig as loadWorkerConfig } from '../../apps/worker/src/config';
import { describeExit, startPlatform, type Platform } from '../../scripts/lib/platform';
import {
  hasRedisServer,
  REDIS_INSTALL_HINT,
  startPostgres,
  startRedis,
  type PostgresServer,
  type RedisServer,
} from '../../scripts/lib/services';
import { apiRequest, TeamClient } from './api';
import { sleep } from './stats';
import type { BenchContext } from './types';

export interface Environment {
  ctx: BenchContext;
  /** What was started and where, for the JSON file. */
  describe(): Record<string, unknown>;
  /** Rejects when an app of the platform exits on its own (a crash under load). */
  appExited: Promise<never>;
  /** Stops everything this run started; safe to call again (a later call may shorten the grace). */
  teardown(opts?: { graceMs?: number }): Promise<void>;
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

/**
 * Fresh servers unless DATABASE_URL / REDIS_URL are set (PostgreSQL with fsync on, Redis with the
 * production AOF settings, both in a temporary folder), migrations, then the platform's three apps
 * as real processes on free ports under a random QUEUE_PREFIX.
 */
export async function setUp(
  signal: AbortSignal,
  /** Receives the teardown at once, so a Ctrl+C during start-up can stop what is already running. */
  onTeardown?: (teardown: Environment['teardown']) => void,
): Promise<Environment> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'platform-bench-'));
  const queuePrefix = `{bench-${randomBytes(4).toString('hex')}}`;
  const rawPrefix = `{benchraw-${randomBytes(4).toString('hex')}}`;
  const externalDb = process.env.DATABASE_URL || undefined;
  const externalRedis = process.env.REDIS_URL || undefined;
  const logLevel = process.env.BENCH_LOG_LEVEL ?? 'warn';

  let postgres: PostgresServer | undefined;
  let redisServer: RedisServer | undefined;
  let platform: Platform | undefined;
  let pool: pg.Pool | undefined;
  let redis: Redis | undefined;
  const queues = new Map<string, Queue>();
  const teams: string[] = [];
  let torndown: Promise<void> | undefined;
  let graceMs = 15_000;

  const teardown = (opts: { graceMs?: number } = {}): Promise<void> => {
    if (opts.graceMs !== undefined && opts.graceMs < graceMs) {
      graceMs = opts.graceMs;
      if (torndown) void platform?.stop({ graceMs });
    }
    torndown ??= (async () => {
      const step = async (what: string, fn: () => Promise<unknown>, timeoutMs = 30_000) => {
        try {
          await Promise.race([fn(), sleep(timeoutMs).then(() => Promise.reject(new Error(`timed out after ${timeoutMs} ms`)))]);
        } catch (err) {
          log(`stopping: ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
        }
      };
      await step('the platform apps', () => platform?.stop({ graceMs }) ?? Promise.resolve(), graceMs + 10_000);
      for (const q of queues.values()) await step(`closing queue ${q.name}`, () => q.close(), 5_000);
      // A Redis of our own goes away with its folder; on one we were given, every key under the
      // run's two random prefixes (the platform's queues and the raw baselines) is removed.
      if (externalRedis && redis) {
        for (const prefix of [queuePrefix, rawPrefix]) {
          await step(`removing the ${prefix} keys`, () => deleteKeys(redis!, `${prefix}:*`), 30_000);
        }
      }
      redis?.disconnect();
      if (externalDb && pool) {
        // The bench's teams and the demo team startPlatform made; they cascade to their projects,
        // tables, rows, jobs and chunk timelines.
        const ids = [...teams, ...(platform ? [platform.demoTeamId] : [])];
        if (ids.length) await step('removing the bench teams', () => pool!.query('delete from teams where id = any($1::uuid[])', [ids]));
      }
      await step('closing the bench pool', () => pool?.end() ?? Promise.resolve(), 5_000);
      await step('Redis', () => redisServer?.stop() ?? Promise.resolve());
      await step('PostgreSQL', () => postgres?.stop() ?? Promise.resolve(), 15_000);
      rmSync(root, { recursive: true, force: true });
    })();
    return torndown;
  };

  onTeardown?.(teardown);
  try {
    if (!externalRedis && !hasRedisServer()) throw new Error(REDIS_INSTALL_HINT);
    log(
      `starting ${[externalDb ? null : 'PostgreSQL (fsync on)', externalRedis ? null : 'redis-server (AOF everysec)'].filter(Boolean).join(' and ') || 'nothing: DATABASE_URL and REDIS_URL are set'} in ${root}`,
    );
    const [pgRes, redisRes] = await Promise.allSettled([
      externalDb ? undefined : startPostgres({ dir: path.join(root, 'pg'), persistent: false, fsync: true }),
      externalRedis ? undefined : startRedis({ dir: path.join(root, 'redis'), persistent: true }),
    ]);
    if (pgRes.status === 'fulfilled') postgres = pgRes.value;
    if (redisRes.status === 'fulfilled') redisServer = redisRes.value;
    if (pgRes.status === 'rejected') throw pgRes.reason;
    if (redisRes.status === 'rejected') throw redisRes.reason;
    signal.throwIfAborted();
    const databaseUrl = externalDb ?? postgres!.url;
    const redisUrl = externalRedis ?? redisServer!.url;

    log('applying migrations');
    await runMigrations(databaseUrl);
    signal.throwIfAborted();

    log(`starting api, worker and dashboard (QUEUE_PREFIX=${queuePrefix}, LOG_LEVEL=${logLevel})`);
    const started = Date.now();
    platform = await startPlatform({
      dataDir: path.join(root, 'platform'),
      databaseUrl,
      redisUrl,
      ports: { api: 0, worker: 0, dashboard: 0 },
      env: { QUEUE_PREFIX: queuePrefix, LOG_LEVEL: logLevel },
      quiet: false,
      signal,
    });
    log(`platform up in ${((Date.now() - started) / 1000).toFixed(1)} s: api ${platform.apiUrl}, worker ${platform.workerUrl}`);
    const plat = platform;

    pool = new pg.Pool({ connectionString: databaseUrl, max: 4, application_name: 'bench' });
    pool.on('error', () => {});
    redis = createRedis(redisUrl, 'worker');
    redis.on('error', () => {}); // reconnects by itself; a failing command says why
    const workerConfig = loadWorkerConfig({ ...process.env, DATABASE_URL: databaseUrl, REDIS_URL: redisUrl });

    // An app that dies ends the run: the benchmark in hand is aborted (its requests and waits too).
    const died = new AbortController();
    const runSignal = AbortSignal.any([signal, died.signal]);
    const appExited = plat.exited.then((e) => {
      const tail = e.output.filter((l) => l.trim() !== '');
      const err = new Error(
        `the ${e.app} process exited ${describeExit(e)} during the run` +
          (tail.length ? `; its last output:\n${tail.map((l) => `  ${l}`).join('\n')}` : ' (no output)'),
      );
      died.abort(err);
      throw err;
    });
    appExited.catch(() => {}); // observed by whoever races it

    const ctx: BenchContext = {
      apiUrl: plat.apiUrl,
      adminToken: plat.adminToken,
      databaseUrl,
      redisUrl,
      queuePrefix,
      rawPrefix,
      worker: { concurrency: workerConfig.concurrency, chunkSize: workerConfig.chunkSize },
      pg: pool,
      redis,
      signal: runSignal,
      log,
      async newTeam(name) {
        const team = await apiRequest(plat.apiUrl, plat.adminToken, 'POST', '/v1/admin/teams', { name }, { signal: runSignal, expect: [201] });
        teams.push(team.body.id);
        return new TeamClient(plat.apiUrl, team.body.id, team.body.token, runSignal);
      },
      platformQueue(name) {
        if (!QUEUE_NAMES.includes(name)) throw new Error(`unknown platform queue ${name} (known: ${QUEUE_NAMES.join(', ')})`);
        const key = `platform:${name}`;
        let q = queues.get(key);
        if (!q) queues.set(key, (q = createQueue(name, redis!, queuePrefix)));
        return q;
      },
      rawQueue(name) {
        const key = `raw:${name}`;
        let q = queues.get(key);
        if (!q) queues.set(key, (q = createQueue(name, redis!, rawPrefix)));
        return q;
      },
      async waitIdle(opts = {}) {
        const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
        for (;;) {
          const r = await pool!.query<{ n: number }>(`select count(*)::int as n from jobs where status in ('queued', 'active')`);
          if (r.rows[0]!.n === 0) return;
          if (Date.now() > deadline) throw new Error(`${r.rows[0]!.n} job(s) still queued or active after ${opts.timeoutMs ?? 180_000} ms`);
          await sleep(200, runSignal);
        }
      },
      async waitJobsEnded(ids, opts = {}) {
        const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
        for (;;) {
          const r = await pool!.query<{ status: string; n: number }>(
            'select status::text, count(*)::int as n from jobs where id = any($1::uuid[]) group by status',
            [ids],
          );
          const at = performance.now();
          const statuses = Object.fromEntries(r.rows.map((x) => [x.status, x.n]));
          const open = (statuses.queued ?? 0) + (statuses.active ?? 0);
          const seen = r.rows.reduce((a, x) => a + x.n, 0);
          if (open === 0 && seen === ids.length) return { at, statuses };
          if (Date.now() > deadline) {
            throw new Error(`jobs did not end within ${opts.timeoutMs ?? 180_000} ms: ${JSON.stringify(statuses)} of ${ids.length}`);
          }
          await sleep(opts.intervalMs ?? 50, runSignal);
        }
      },
    };

    return {
      ctx,
      appExited,
      teardown,
      describe: () => ({
        postgres: externalDb ? 'DATABASE_URL (external)' : 'embedded, fsync on, fresh temp dir',
        redis: externalRedis ? 'REDIS_URL (external)' : 'redis-server, appendonly yes, appendfsync everysec, noeviction, fresh temp dir',
        queuePrefix,
        rawPrefix,
        worker: ctx.worker,
        logLevel,
      }),
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}

async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}

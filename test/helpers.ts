import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { claimsTable, createDatabase, type Database } from '@platform/db';
import { cloneTemplateDatabase } from '@platform/db/testing';
import { createRedis, FsBlobStore, Producer } from '@platform/jobs';

export const ROOT = path.resolve(import.meta.dirname, '..');

/** One test file's isolated world: its own database clone, queue prefix and blob folder. */
export interface TestEnv {
  databaseUrl: string;
  redisUrl: string;
  queuePrefix: string;
  blobDir: string;
  database: Database;
  /** Environment for a spawned app process. */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

export async function createTestEnv(): Promise<TestEnv> {
  const clone = await cloneTemplateDatabase(inject('pgAdminUrl'));
  const redisUrl = inject('redisUrl');
  const queuePrefix = `{t${randomBytes(4).toString('hex')}}`;
  const blobDir = mkdtempSync(path.join(os.tmpdir(), 'blobs-'));
  const database = createDatabase({ url: clone.url, max: 5, applicationName: 'test' });
  return {
    databaseUrl: clone.url,
    redisUrl,
    queuePrefix,
    blobDir,
    database,
    env: {
      DATABASE_URL: clone.url,
      REDIS_URL: redisUrl,
      QUEUE_PREFIX: queuePrefix,
      BLOB_DIR: blobDir,
      LOG_LEVEL: 'warn',
      // Fixed chunk sizes, so tests can count chunks; the adaptive sizer has its own tests.
      WORKER_CHUNK_BUDGET_MS: '0',
      // On a loaded test machine reads are slow for reasons of their own; the latency signal
      // would pace every worker. apps/api/test/pressure.test.ts turns it on.
      API_PRESSURE_LATENCY_MS: '0',
    },
    async cleanup() {
      await database.close();
      await clone.drop();
      rmSync(blobDir, { recursive: true, force: true });
    },
  };
}

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** Builds the API in-process on the test env (requests go through `app.inject`). */
export async function buildTestApi(t: TestEnv, env: Record<string, string> = {}) {
  const { buildApp } = await import('../apps/api/src/app');
  const { loadConfig } = await import('../apps/api/src/config');
  const config = loadConfig({ ...t.env, ADMIN_TOKEN, API_PORT: '0', ...env });
  const redis = createRedis(config.redisUrl, 'producer');
  const database = createDatabase({ url: config.databaseUrl, max: 5, applicationName: 'api-test' });
  const producer = new Producer(redis, config.queuePrefix, database.db);
  return buildApp({ config, database, redis, producer, blobs: new FsBlobStore(config.blobDir) }, { ownsDeps: true });
}

export interface AppProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code or signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts a real app process (the worker, say) as deployments do. Node loads tsx as a hook in the
 * same process (the `tsx` CLI would add a parent process), so signals reach the app itself.
 */
export function spawnApp(entry: string, env: Record<string, string>): AppProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, entry)], {
    cwd: ROOT,
    // See createTestEnv: the latency pressure signal is off unless a test sets it.
    env: { ...process.env, API_PRESSURE_LATENCY_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

export function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

/**
 * Settings for crash tests: short BullMQ locks and Postgres guards, so the job of a killed or
 * frozen worker is taken over within seconds, not minutes.
 */
export const FAST_TAKEOVER_ENV: Record<string, string> = {
  WORKER_PORT: '0',
  WORKER_LOCK_DURATION_MS: '2000',
  WORKER_STALLED_INTERVAL_MS: '1000',
  WORKER_IDLE_IN_TX_TIMEOUT_MS: '3000',
  WORKER_LOCK_TIMEOUT_MS: '1000',
  LOG_LEVEL: 'info',
};

/**
 * Real worker processes of one test file. Call `killAll` in `afterEach`: a worker that outlived
 * its test would take the next test's job.
 */
export function workerProcesses(env: () => Record<string, string>) {
  const list: AppProcess[] = [];
  return {
    list,
    start(extra: Record<string, string> = {}): AppProcess {
      const w = spawnApp('apps/worker/src/main.ts', { ...env(), ...FAST_TAKEOVER_ENV, ...extra });
      list.push(w);
      return w;
    },
    async killAll(): Promise<void> {
      for (const w of list) {
        w.child.kill('SIGCONT'); // a frozen (SIGSTOPped) worker must wake to die
        w.kill('SIGKILL');
      }
      await Promise.all(list.map((w) => w.exited));
      list.length = 0;
    },
  };
}

/** Rows in an import job's claims table, or null when the table is gone (dropped at the job's end). */
export async function claimCount(database: Database, jobId: string): Promise<number | null> {
  const t = claimsTable(jobId);
  const exists = (await database.pool.query<{ t: string | null }>('select to_regclass($1)::text as t', [t])).rows[0]!.t !== null;
  if (!exists) return null;
  return (await database.pool.query<{ n: number }>(`select count(*)::int as n from ${t}`)).rows[0]!.n;
}

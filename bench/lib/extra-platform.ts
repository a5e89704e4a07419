import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import { ROOT_DIR, startPlatform, type Platform } from '../../scripts/lib/platform';
import { sleep } from './stats';

/**
 * A second copy of the platform's three apps next to the harness's (e.g. with FAIR_SCHEDULING=false
 * for a FIFO baseline, or another connection budget), under its own random QUEUE_PREFIX so the two
 * never drain each other's queues. Its folder (blobs, secrets) is temporary.
 */
export interface ExtraPlatform {
  platform: Platform;
  queuePrefix: string;
  stop(): Promise<void>;
}

export async function startExtraPlatform(opts: {
  databaseUrl: string;
  redisUrl: string;
  env: Record<string, string>;
  tag: string;
  signal?: AbortSignal;
}): Promise<ExtraPlatform> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `platform-bench-${opts.tag}-`));
  const queuePrefix = `{bench${opts.tag}-${randomBytes(4).toString('hex')}}`;
  let platform: Platform;
  try {
    platform = await startPlatform({
      dataDir: dir,
      databaseUrl: opts.databaseUrl,
      redisUrl: opts.redisUrl,
      ports: { api: 0, worker: 0, dashboard: 0 },
      env: { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', ...opts.env, QUEUE_PREFIX: queuePrefix },
      quiet: true,
      signal: opts.signal,
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  platform.exited.then(
    (e) => process.stderr.write(`[bench] extra platform ${opts.tag}: ${e.app} exited (${e.code ?? e.signal}): ${e.output.slice(-5).join(' | ')}\n`),
    () => {},
  );
  let stopped: Promise<void> | undefined;
  return {
    platform,
    queuePrefix,
    stop() {
      stopped ??= platform.stop({ graceMs: 15_000 }).finally(() => rmSync(dir, { recursive: true, force: true }));
      return stopped;
    },
  };
}

export interface WorkerProcess {
  pid: number;
  /** SIGTERM (graceful: runs hand back at their next chunk boundary), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

/**
 * One more worker process (`node --import tsx apps/worker/src/main.ts`, as startPlatform runs it),
 * with the given environment over this process's; resolves once it logged that it started.
 */
export async function startWorkerProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<WorkerProcess> {
  const loader = pathToFileURL(createRequire(path.join(ROOT_DIR, 'package.json')).resolve('tsx')).href;
  const child = spawn(process.execPath, ['--import', loader, 'src/main.ts'], {
    cwd: path.join(ROOT_DIR, 'apps/worker'),
    // info: the "worker started" line is how we know it is up (its health port is a free one).
    env: { ...process.env, ...env, WORKER_PORT: '0', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  let started: (() => void) | undefined;
  const up = new Promise<void>((resolve) => (started = resolve));
  for (const stream of [child.stdout!, child.stderr!]) {
    readline.createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      if (line.includes('"worker started"')) started?.();
      else if (/"level":(50|60)/.test(line)) process.stderr.write(`[bench] extra worker: ${line}\n`);
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const timedOut = sleep(timeoutMs).then(() => 'timeout' as const);
  const first = await Promise.race([up.then(() => 'up' as const), exited.then(() => 'exited' as const), timedOut]);
  if (first !== 'up') {
    if (first === 'timeout') child.kill('SIGKILL');
    throw new Error(`the extra worker ${first === 'timeout' ? 'did not start in time' : 'exited'}: ${tail.slice(-5).join(' | ')}`);
  }
  return {
    pid: child.pid!,
    exited,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Removes every key matching `pattern` (a run's own prefix on a Redis we were given). */
export async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}

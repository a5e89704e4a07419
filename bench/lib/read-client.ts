import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * The client of the read benchmarks (the export's download, the baseline's `COPY … TO STDOUT`) in
 * a process of its own, started before anything is timed: both sides' bytes arrive in a small
 * process with nothing else to do, as in a user's curl or psql. In the bench process, which by
 * then holds the whole run's state (samples, pools, timers of the benchmarks before), the same
 * 300 MiB download took 1.0–1.5 s in full runs against 0.6 s in an export-only run, the bench
 * process using 45–59 % of the machine for it.
 *
 * Each request runs alone (the benchmarks await one before the next); the child replies with its
 * own timing, bytes and status, or the error's message.
 */
export interface ReadClient {
  /** GET with the team's token, the body streamed to /dev/null. */
  download(url: string, token: string): Promise<{ status: number; bytes: number; ms: number }>;
  /** `COPY (…) TO STDOUT` on the child's one session, streamed to /dev/null. */
  copyOut(sql: string): Promise<{ ms: number; bytes: number }>;
  /** Any other statement on that session (a `set`, an `explain`): its rows. */
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): Promise<void>;
}

export type ReadRequest = { kind: 'download'; url: string; token: string } | { kind: 'copy'; sql: string } | { kind: 'query'; sql: string };
export type ReadReply = { id: number; ok: true; result: any } | { id: number; ok: false; error: string };

const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** What the CPU sampler looks for in a process's command line to name it. */
export const READ_CLIENT_ENTRY = 'bench/lib/read-client-main.ts';

/** Starts the client (it connects to PostgreSQL first); `signal` (Ctrl+C) kills it, failing what it was doing. */
export async function startReadClient(databaseUrl: string, signal?: AbortSignal, readyMs = 60_000): Promise<ReadClient> {
  const loader = pathToFileURL(createRequire(path.join(ROOT_DIR, 'package.json')).resolve('tsx')).href;
  const child: ChildProcess = spawn(process.execPath, ['--import', loader, READ_CLIENT_ENTRY], {
    cwd: ROOT_DIR,
    env: { ...process.env, READ_CLIENT_DATABASE_URL: databaseUrl },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(`the read client ${why}`));
    pending.clear();
  };
  let gone: string | undefined;
  child.on('message', (m: ReadReply | 'ready') => {
    if (m === 'ready') return;
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.ok) p?.resolve(m.result);
    else p?.reject(new Error(m.error));
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, sig) => {
      gone = `exited (${sig ?? code})`;
      failAll(gone);
      resolve();
    }),
  );
  // A failed spawn (no exit follows), or a send on a channel that closed before the exit came.
  let failed!: () => void;
  const errored = new Promise<void>((resolve) => (failed = resolve));
  child.on('error', (err) => {
    gone ??= `failed: ${err.message}`;
    failAll(gone);
    failed();
  });
  const ended = Promise.race([exited, errored]);
  const kill = () => child.kill('SIGKILL');
  signal?.addEventListener('abort', kill, { once: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the read client was not ready within ${readyMs} ms`)), readyMs);
      child.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      void ended.then(() => {
        clearTimeout(timer);
        reject(new Error(`the read client ${gone} before it was ready`));
      });
    });
  } catch (err) {
    kill();
    throw err;
  }
  let next = 0;
  const ask = <T>(req: ReadRequest): Promise<T> => {
    if (gone) return Promise.reject(new Error(`the read client ${gone}`));
    const id = ++next;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ id, ...req }, (err) => {
        if (!err) return;
        pending.delete(id);
        reject(new Error(`the read client could not be asked: ${err.message}`));
      });
    });
  };
  return {
    download: (url, token) => ask({ kind: 'download', url, token }),
    copyOut: (sql) => ask({ kind: 'copy', sql }),
    query: (sql) => ask({ kind: 'query', sql }),
    async close() {
      signal?.removeEventListener('abort', kill);
      if (!gone) child.kill('SIGTERM');
      await ended;
    },
  };
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * A helper process of the bench (its TypeScript entry run with tsx), asked over IPC. The bench
 * process holds a whole run's state by the time the later benchmarks run (pools, timers, samples):
 * what must be timed without its pauses runs in a small process of its own, started before
 * anything is timed.
 *
 * The child serves with `serveIpc`; each request gets one reply. A failed spawn, an exit, a closed
 * channel or `signal` (Ctrl+C, which kills the child) fail what was asked instead of hanging.
 */
export interface IpcChild<Req> {
  ask<T>(req: Req): Promise<T>;
  close(): Promise<void>;
}

type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `entry` relative to the repository's root; `name` says which helper in errors. */
export async function startIpcChild<Req extends object>(
  entry: string,
  name: string,
  env: Record<string, string>,
  signal?: AbortSignal,
  readyMs = 60_000,
): Promise<IpcChild<Req>> {
  const loader = pathToFileURL(createRequire(path.join(ROOT_DIR, 'package.json')).resolve('tsx')).href;
  const child: ChildProcess = spawn(process.execPath, ['--import', loader, entry], {
    cwd: ROOT_DIR,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new Error(`the ${name} ${why}`));
    pending.clear();
  };
  let gone: string | undefined;
  child.on('message', (m: Reply | 'ready') => {
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
      const timer = setTimeout(() => reject(new Error(`the ${name} was not ready within ${readyMs} ms`)), readyMs);
      child.once('message', () => {
        clearTimeout(timer);
        resolve();
      });
      void ended.then(() => {
        clearTimeout(timer);
        reject(new Error(`the ${name} ${gone} before it was ready`));
      });
    });
  } catch (err) {
    kill();
    throw err;
  }
  let next = 0;
  return {
    ask<T>(req: Req): Promise<T> {
      if (gone) return Promise.reject(new Error(`the ${name} ${gone}`));
      const id = ++next;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ ...req, id }, (err) => {
          if (!err) return;
          pending.delete(id);
          reject(new Error(`the ${name} could not be asked: ${err.message}`));
        });
      });
    },
    /** SIGTERM, then SIGKILL if it has not exited within 5 s (its shutdown waits for what it was doing). */
    async close() {
      signal?.removeEventListener('abort', kill);
      if (!gone) child.kill('SIGTERM');
      const timer = setTimeout(kill, 5_000);
      await ended;
      clearTimeout(timer);
    },
  };
}

/**
 * The child's side: answers every request with `handle`'s result or error, concurrently (a long
 * request does not hold up the next), and tells the parent it is ready. `onExit` runs on SIGTERM
 * before the process exits; a parent that is gone ends the process.
 */
export function serveIpc<Req>(handle: (req: Req) => Promise<unknown>, onExit: () => Promise<unknown> = async () => {}): void {
  process.on('SIGTERM', () => {
    void onExit().finally(() => process.exit(0));
  });
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: Req & { id: number }) => {
    handle(m).then(
      (result) => process.send!({ id: m.id, ok: true, result } satisfies Reply),
      (err: unknown) => process.send!({ id: m.id, ok: false, error: err instanceof Error ? err.message : String(err) } satisfies Reply),
    );
  });
  process.send!('ready');
}

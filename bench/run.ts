import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { takeOverSignals } from '../scripts/lib/services';
import { benches } from './benches/index';
import { setUp, type Environment } from './lib/harness';
import { onParentGone, superviseInOwnGroup } from './lib/relay';
import { ratioOf, renderTable } from './lib/report';
import type { ResultRow } from './lib/types';

/**
 * `npm run bench`: starts fresh servers and the platform, runs every benchmark (or the ones named
 * by `--only`), each next to its baseline measured in the same run, prints one table and writes
 * bench/results/latest.json. Timings on a shared machine are only comparable as ratios of one run.
 *
 *   npm run bench                       all of them
 *   npm run bench -- --only small-jobs  one (or several: --only a,b or --only a --only b)
 *   npm run bench -- --list             their names
 *
 * DATABASE_URL / REDIS_URL, when set, are used instead of fresh servers (the bench's teams are
 * deleted afterwards). BENCH_LOG_LEVEL sets the apps' LOG_LEVEL (default warn).
 */

const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);

function parseArgs(argv: string[]): { only: string[]; list: boolean } {
  const only: string[] = [];
  let list = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') {
      const v = argv[++i];
      if (!v) usage('--only needs a benchmark name');
      only.push(...v.split(','));
    } else if (a.startsWith('--only=')) only.push(...a.slice('--only='.length).split(','));
    else if (a === '--list') list = true;
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  return { only: only.map((s) => s.trim()).filter(Boolean), list };
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`${problem}\n`);
  process.stderr.write(
    'usage: npm run bench [-- --only <name>[,<name>…]] [-- --list]\nbenchmarks:\n' +
      benches.map((b) => `  ${b.name.padEnd(24)} ${b.description}`).join('\n') +
      '\n',
  );
  process.exit(problem ? 2 : 0);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.list) {
    for (const b of benches) process.stdout.write(`${b.name.padEnd(24)} ${b.description}\n`);
    return;
  }
  const unknown = args.only.filter((n) => !benches.some((b) => b.name === n));
  if (unknown.length) usage(`unknown benchmark ${unknown.join(', ')}`);
  const selected = args.only.length ? benches.filter((b) => args.only.includes(b.name)) : benches;

  // Our shutdown order (apps, then Redis, then PostgreSQL), not services.ts's immediate exit.
  takeOverSignals();
  const ac = new AbortController();
  let env: Environment | undefined;
  let teardown: Environment['teardown'] | undefined;
  let signals = 0;
  const onSignal = (sig: string) => {
    signals++;
    if (signals === 1) {
      log(`${sig}: stopping the platform and the servers (again to kill the apps at once)`);
      ac.abort(new Error(`interrupted by ${sig}`));
      void (teardown?.() ?? Promise.resolve()).finally(() => process.exit(130));
    } else {
      void teardown?.({ graceMs: 0 });
      if (signals >= 3) process.exit(130);
    }
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => onSignal(sig));
  onParentGone(() => onSignal('parent exit'));
  for (const ev of ['uncaughtException', 'unhandledRejection'] as const) {
    process.on(ev, (err: unknown) => {
      log(`${ev}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      void (teardown?.({ graceMs: 5_000 }) ?? Promise.resolve()).finally(() => process.exit(1));
    });
  }

  const startedAt = new Date();
  const results: ResultRow[] = [];
  const timings: Record<string, number> = {};
  try {
    env = await setUp(ac.signal, (t) => (teardown = t));
    for (const bench of selected) {
      ac.signal.throwIfAborted();
      log(`${bench.name}: ${bench.description}`);
      const t0 = performance.now();
      try {
        // Each benchmark starts on a quiet platform: nothing left queued or running.
        await env.ctx.waitIdle({ timeoutMs: 120_000 });
        const rows = await Promise.race([bench.run(env.ctx), env.appExited]);
        for (const r of rows) results.push({ ...r, module: bench.name, ratio: ratioOf(r) });
      } catch (err) {
        if (ac.signal.aborted) throw err;
        const message = err instanceof Error ? err.message : String(err);
        log(`${bench.name} FAILED: ${message}`);
        results.push({ module: bench.name, bench: bench.name, platform: null, baseline: null, ratio: null, failed: true, note: `FAILED: ${message.split('\n')[0]}` });
        process.exitCode = 1;
        // A crashed app leaves nothing to measure.
        if (/process exited/.test(message)) break;
      } finally {
        timings[bench.name] = Math.round((performance.now() - t0) / 100) / 10;
        log(`${bench.name}: ${timings[bench.name]} s`);
      }
    }

    const finishedAt = new Date();
    process.stdout.write(
      `\nratio = platform ÷ baseline, both measured in this run (latency and longest tx: lower is better; rows/s and jobs/s: higher is better)\n` +
        `${os.cpus().length} cores, Node ${process.versions.node}\n\n`,
    );
    process.stdout.write(`${renderTable(results)}\n\n`);
    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = path.join(RESULTS_DIR, 'latest.json');
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          startedAt: startedAt.toISOString(),
          finishedAt: finishedAt.toISOString(),
          durationS: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
          machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.versions.node, platform: `${os.platform()} ${os.release()}` },
          environment: env.describe(),
          benches: selected.map((b) => ({ name: b.name, description: b.description, seconds: timings[b.name] ?? null })),
          ratio: 'platform / baseline',
          rows: results,
        },
        null,
        2,
      )}\n`,
    );
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    if (teardown) {
      log('stopping the platform and the servers');
      await teardown();
    }
  }
}

if (superviseInOwnGroup(fileURLToPath(import.meta.url))) {
  main().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      log(err instanceof Error ? err.message : String(err));
      process.exit(process.exitCode || 1);
    },
  );
}

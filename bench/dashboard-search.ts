import { randomBytes } from 'node:crypto';
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDatabase, JOB_STATUSES, runMigrations, searchJobsAllTeams, type JobStatus } from '@platform/db';
import { createRedis, jobCatalog, waitReady } from '@platform/jobs';
import { buildApp } from '../apps/dashboard/src/app';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../scripts/lib/services';
import type { BenchModule, BenchRow } from './lib/types';

/**
 * Issue 5 acceptance (2): with 1,000,000 history rows over 1,000 teams, 4 job types and 5
 * statuses, the dashboard's search by team and status (first page of 50) answers over HTTP in
 * under 100 ms median. The dashboard runs in this process on a free port and is asked over real
 * HTTP (keep-alive, HTTP Basic as scripts do; the page is the HTML staff read), one request at a
 * time, a random team each time. Baseline: the same query run directly on the pool.
 *
 * It starts its own PostgreSQL (the million rows stay out of the platform's database; fsync off:
 * this measures reads) and loads the rows with generate_series in SQL.
 *
 *   npx tsx bench/dashboard-search.ts            standalone (starts its own Redis too)
 *   DASHBOARD_SEARCH_ROWS=200000 npx tsx …        a smaller table
 *   npx tsx bench/dashboard-search.ts --without-search-indexes   the same without migration 0003's indexes
 */

export interface DashboardSearchOptions {
  rows?: number;
  teams?: number;
  requests?: number;
  warmup?: number;
  /** A Redis to use (the harness's); standalone, a throwaway one is started. */
  redisUrl?: string;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Drops the indexes of migration 0003 first, to show what they are worth. */
  withoutSearchIndexes?: boolean;
}

export interface Timing {
  medianMs: number;
  p99Ms: number;
}

export interface DashboardSearchResult {
  rows: number;
  teams: number;
  requests: number;
  loadSeconds: number;
  /** GET /jobs?team=<id>&status=<s> (HTML, first page of 50), over HTTP. */
  teamStatusHttp: Timing;
  /** The same search as JSON, GET /api/jobs?team=…&status=… */
  teamStatusJson: Timing;
  /** GET /jobs?status=<s>&type=<t>: every team. */
  statusTypeHttp: Timing;
  /** The team + status query alone, on the pool: what HTTP, auth and rendering add to. */
  teamStatusSql: Timing;
  /** EXPLAIN ANALYZE of the team + status query, first lines. */
  plan: string;
}

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}
const timing = (ms: number[]): Timing => ({ medianMs: percentile(ms, 50), p99Ms: percentile(ms, 99) });
const round = (v: number) => Math.round(v * 100) / 100;

/** A small deterministic PRNG, so runs pick the same teams. */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x ^= x + Math.imul(x ^ (x >>> 7), 61 | x);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runDashboardSearchBench(opts: DashboardSearchOptions = {}): Promise<DashboardSearchResult> {
  const rows = opts.rows ?? 1_000_000;
  const teamCount = opts.teams ?? 1_000;
  const requests = opts.requests ?? 300;
  const warmup = opts.warmup ?? 30;
  const log = opts.log ?? ((l: string) => process.stderr.write(`[dashboard-search] ${l}\n`));
  const root = mkdtempSync(path.join(os.tmpdir(), 'dashboard-search-'));
  let postgres: PostgresServer | undefined;
  let redisServer: RedisServer | undefined;
  let database: ReturnType<typeof createDatabase> | undefined;
  let redis: ReturnType<typeof createRedis> | undefined;
  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  try {
    postgres = await startPostgres({ dir: path.join(root, 'pg'), persistent: false, fsync: false });
    await runMigrations(postgres.url);
    const redisUrl = opts.redisUrl ?? (redisServer = await startRedis({ dir: path.join(root, 'redis'), persistent: false })).url;
    database = createDatabase({ url: postgres.url, max: 4, applicationName: 'dashboard-search-bench' });
    const pool = database.pool;

    // The history: team = i mod 1000, type and status cycle independently of it, so every team
    // has every (type, status) pair; created_at spreads the rows over the last 30 days.
    const t0 = performance.now();
    await pool.query(`insert into teams (id, name) select gen_random_uuid(), 'team-' || lpad(i::text, 4, '0') from generate_series(1, $1) i`, [teamCount]);
    const types = Object.values(jobCatalog).map((d) => d.name);
    const queues = Object.values(jobCatalog).map((d) => d.queue);
    const batch = 100_000;
    for (let from = 1; from <= rows; from += batch) {
      opts.signal?.throwIfAborted();
      const to = Math.min(rows, from + batch - 1);
      await pool.query(
        `insert into jobs (id, team_id, type, queue, status, payload, progress_done, progress_total, attempts, created_at, started_at, finished_at, error)
         select gen_random_uuid(), t.ids[1 + i % $3], ($4::text[])[1 + (i / $3) % 4], ($5::text[])[1 + (i / $3) % 4], st,
                jsonb_build_object('tableId', gen_random_uuid(), 'blobKey', 'bulk/' || i || '.ndjson', 'operationCount', 1000),
                case when st = 'completed' then 1000 else 500 end, 1000, 0, c, c + interval '2 seconds',
                case when st in ('completed', 'failed', 'cancelled') then c + interval '40 seconds' end,
                case when st = 'failed' then '{"code":"internal","message":"boom"}'::jsonb end
         from generate_series($1::int, $2::int) i
         cross join (select array_agg(id order by name) as ids from teams) t
         cross join lateral (select ($6::text[])[1 + (i / ($3 * 4)) % 5]::job_status as st,
                                    now() - make_interval(secs => ($7::int - i) * 2.592) as c) x`,
        [from, to, teamCount, types, queues, [...JOB_STATUSES], rows],
      );
      log(`loaded ${to.toLocaleString('en-US')} / ${rows.toLocaleString('en-US')} rows`);
    }
    if (opts.withoutSearchIndexes) {
      for (const idx of ['jobs_created_idx', 'jobs_status_created_idx', 'jobs_type_created_idx', 'jobs_team_status_created_idx']) await pool.query(`drop index ${idx}`);
      log('dropped the dashboard search indexes');
    }
    await pool.query('vacuum analyze jobs');
    await pool.query('analyze teams');
    const loadSeconds = round((performance.now() - t0) / 1000);
    log(`loaded and analyzed in ${loadSeconds} s`);
    const teamIds = (await pool.query<{ id: string }>('select id from teams order by name')).rows.map((r) => r.id);

    redis = createRedis(redisUrl, 'producer');
    await waitReady(redis);
    const operator = { username: 'bench', password: randomBytes(12).toString('base64url') };
    app = await buildApp({ db: database.db, redis, queuePrefix: `{dash-bench-${randomBytes(4).toString('hex')}}`, operator, sessionSecret: randomBytes(32).toString('base64url'), cookieSecure: 'auto' });
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const authorization = `Basic ${Buffer.from(`${operator.username}:${operator.password}`).toString('base64')}`;
    const random = rng(42);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;

    const measure = async (label: string, url: () => string, check: (body: string) => void): Promise<Timing> => {
      const ms: number[] = [];
      for (let i = 0; i < warmup + requests; i++) {
        opts.signal?.throwIfAborted();
        const started = performance.now();
        const res = await fetch(`${base}${url()}`, { headers: { authorization, accept: 'text/html' } });
        const body = await res.text();
        const elapsed = performance.now() - started;
        if (res.status !== 200) throw new Error(`${label}: HTTP ${res.status}: ${body.slice(0, 200)}`);
        check(body);
        if (i >= warmup) ms.push(elapsed);
      }
      const t = timing(ms);
      log(`${label}: median ${round(t.medianMs)} ms, p99 ${round(t.p99Ms)} ms over ${requests} requests`);
      return t;
    };
    // Each team has rows / teams / 5 jobs of each status (200 on the full table): a full page of 50.
    const perTeamStatus = Math.floor(rows / teamCount / JOB_STATUSES.length);
    const pageOf = (expected: number) => (body: string) => {
      const n = body.match(/<tr><td><a href="\/jobs\//g)?.length ?? 0;
      if (n !== expected) throw new Error(`expected a first page of ${expected} jobs, got ${n}`);
    };
    const teamStatusHttp = await measure('GET /jobs?team&status (HTML)', () => `/jobs?team=${pick(teamIds)}&status=${pick(JOB_STATUSES)}`, pageOf(Math.min(50, perTeamStatus)));
    const teamStatusJson = await measure('GET /api/jobs?team&status (JSON)', () => `/api/jobs?team=${pick(teamIds)}&status=${pick(JOB_STATUSES)}`, (b) => {
      if ((JSON.parse(b) as { jobs: unknown[] }).jobs.length !== Math.min(50, perTeamStatus)) throw new Error('expected a full first page');
    });
    const statusTypeHttp = await measure('GET /jobs?status&type (HTML)', () => `/jobs?status=${pick(JOB_STATUSES)}&type=${pick(types)}`, pageOf(50));

    const sqlMs: number[] = [];
    for (let i = 0; i < warmup + requests; i++) {
      const started = performance.now();
      const page = await searchJobsAllTeams(database.db, { teamIds: [pick(teamIds)], status: pick(JOB_STATUSES) as JobStatus, limit: 51 });
      if (page.length !== Math.min(51, perTeamStatus)) throw new Error('expected a full page from the query');
      if (i >= warmup) sqlMs.push(performance.now() - started);
    }
    const teamStatusSql = timing(sqlMs);
    log(`the query alone: median ${round(teamStatusSql.medianMs)} ms, p99 ${round(teamStatusSql.p99Ms)} ms`);

    const explained = await pool.query<{ 'QUERY PLAN': string }>(
      `explain (analyze, buffers, costs off)
       select j.id from jobs j left join teams t on t.id = j.team_id
       where j.team_id = $1 and j.status = 'failed' order by j.created_at desc, j.id desc limit 51`,
      [teamIds[7]],
    );
    const plan = explained.rows.map((r) => r['QUERY PLAN']).slice(0, 12).join('\n');
    log(`plan:\n${plan}`);
    return { rows, teams: teamCount, requests, loadSeconds, teamStatusHttp, teamStatusJson, statusTypeHttp, teamStatusSql, plan };
  } finally {
    await app?.close().catch(() => {});
    redis?.disconnect();
    await database?.close().catch(() => {});
    await redisServer?.stop().catch(() => {});
    await postgres?.stop().catch(() => {});
    rmSync(root, { recursive: true, force: true });
  }
}

/** For bench/benches/index.ts: one row per measured request kind, next to the bare query. */
export const dashboardSearch: BenchModule = {
  name: 'dashboard-search',
  description: 'dashboard job search by team + status, first page of 50, over HTTP on 1M history rows (own PostgreSQL), vs the bare query',
  async run(ctx): Promise<BenchRow[]> {
    const r = await runDashboardSearchBench({ redisUrl: ctx.redisUrl, log: ctx.log, signal: ctx.signal });
    const ms = (v: number) => ({ value: round(v), unit: 'ms' });
    const note = `${r.rows.toLocaleString('en-US')} rows, ${r.teams} teams; target: median < 100 ms`;
    return [
      { bench: 'dashboard-search team+status p50', platform: ms(r.teamStatusHttp.medianMs), baseline: ms(r.teamStatusSql.medianMs), better: 'lower', note },
      { bench: 'dashboard-search team+status p99', platform: ms(r.teamStatusHttp.p99Ms), baseline: ms(r.teamStatusSql.p99Ms), better: 'lower' },
      { bench: 'dashboard-search status+type p50', platform: ms(r.statusTypeHttp.medianMs), baseline: null, better: 'lower', note: 'all teams' },
    ];
  },
};

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const rows = process.env.DASHBOARD_SEARCH_ROWS ? Number(process.env.DASHBOARD_SEARCH_ROWS) : undefined;
  runDashboardSearchBench({ rows, withoutSearchIndexes: process.argv.includes('--without-search-indexes') }).then(
    (r) => {
      const f = (t: Timing) => `median ${round(t.medianMs)} ms, p99 ${round(t.p99Ms)} ms`;
      process.stdout.write(
        `\n${r.rows.toLocaleString('en-US')} history rows, ${r.teams} teams, ${r.requests} requests each (loaded in ${r.loadSeconds} s)\n` +
          `search by team + status, first page of 50, HTML over HTTP: ${f(r.teamStatusHttp)}\n` +
          `the same as JSON (/api/jobs):                           ${f(r.teamStatusJson)}\n` +
          `search by status + type (all teams), HTML over HTTP:    ${f(r.statusTypeHttp)}\n` +
          `the team + status query alone, on the pool:             ${f(r.teamStatusSql)}\n`,
      );
      process.exit(r.teamStatusHttp.medianMs < 100 ? 0 : 1);
    },
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

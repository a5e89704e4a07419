import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { apiRequest } from '../lib/api';
import { describeCpu, startCpuWindow, type CpuWindow } from '../lib/cpu-sampler';
import { byteSize, ndjsonFile, postImport } from '../lib/ndjson-import';
import { openLoop, type OpenLoopResult } from '../lib/open-loop';
import { BENCH_FIELDS, rowData } from '../lib/rows';
import { percentile, sleep } from '../lib/stats';
import type { BenchContext, BenchModule, BenchRow } from '../lib/types';

const ROWS = 1_000_000;
/** Rows already in the imported table, the ones the editor saves while the import runs. */
const IMPORT_TABLE_SEED = 10_000;
/** 200 requests/s: one every 5 ms, open loop. */
const INTERVAL_MS = 5;
/** Every SAVE_EVERY-th request is the editor's save (20/s), the others are reads (180/s). */
const SAVE_EVERY = 10;
const IDLE_MS = 10_000;
/** How long the load runs during a platform job (the job is then cancelled). */
const PLATFORM_WINDOW_MS = 15_000;
/** A status-quo transaction is measured until it commits, at most this long. */
const STATUS_QUO_MAX_MS = 240_000;
/** The diagnostic window with the DB-pressure signal held on. */
const PACED_WINDOW_MS = 10_000;
const EDITOR_POOL = 4;
const SAVE_TARGET_MS = 250;
/** A window where processes outside this run took more of the machine than this is flagged. */
const NOISE_PCT = 10;

interface Phase {
  name: string;
  read: number[];
  save: number[];
  seconds: number;
  errors: number;
  firstError?: string;
  cpu: string;
  cpuOthers?: number;
  extra: string;
}

/**
 * Issue 4: what heavy work does to the studio's own interactive traffic on the shared database.
 * An open-loop generator fires one request every 5 ms (200/s): reads of random rows through the
 * API (`GET /v1/cms-tables/:id/rows/:rowId`, over 1,000,000 rows) and, every 10th, an editor
 * saving one row of the very table being written, directly (`UPDATE cms_rows SET draft_data = …
 * WHERE id = …` through its own pool of 4, as the studio does). Latency counts from the scheduled
 * time. Phases: idle; during a 1,000,000-row publish and a 1,000,000-row import through the
 * platform (a 15 s window once chunks are committing, then the job is cancelled); and during the
 * same work done the old way, each in one transaction (`UPDATE cms_rows SET data = draft_data
 * WHERE table_id = …`; one INSERT … SELECT of 1,000,000 rows), measured until it commits.
 */
export const interactiveLatency: BenchModule = {
  name: 'interactive-latency',
  description: `reads + editor saves at 200 req/s: idle, during a ${ROWS.toLocaleString('en-US')}-row publish/import via the platform vs one transaction`,
  async run(ctx) {
    const team = await ctx.newTeam('bench: interactive latency');
    const pubProject = await team.createProject('interactive: published');
    const pubTable = (await team.createTable(pubProject.id, 'live posts', BENCH_FIELDS)).id;
    await team.request('POST', `/v1/projects/${pubProject.id}/revisions`, { data: { pages: ['home'] } }, [201]);
    // Another project: a publish writes every table of its project (and holds them).
    const impProject = await team.createProject('interactive: imported');
    const impTable = (await team.createTable(impProject.id, 'imported posts', BENCH_FIELDS)).id;

    // --- the data: 1,000,000 draft rows to publish, 10,000 rows for the editor during imports --
    const t0 = performance.now();
    const pubIds = await seedRows(ctx, pubTable, team.teamId, ROWS, 'p');
    const impIds = await seedRows(ctx, impTable, team.teamId, IMPORT_TABLE_SEED, 's');
    await ctx.pg.query('vacuum (analyze) cms_rows');
    await ctx.pg.query('checkpoint').catch(() => {}); // superuser only; a cleaner start when allowed
    ctx.log(`interactive-latency: ${(ROWS + IMPORT_TABLE_SEED).toLocaleString('en-US')} rows seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const api = new URL(ctx.apiUrl);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    const editor = new pg.Pool({ connectionString: ctx.databaseUrl, max: EDITOR_POOL, application_name: 'studio-editor' });
    editor.on('error', () => {});
    let saves = 0;
    const read = (tableRows: string[], tableId: string) => ({
      name: 'read',
      fire: () =>
        getOk(agent, api, `/v1/cms-tables/${tableId}/rows/${tableRows[Math.floor(Math.random() * tableRows.length)]!}`, team.token),
    });
    const save = (rows: string[]) => ({
      name: 'save',
      fire: async () => {
        const id = rows[Math.floor(Math.random() * rows.length)]!;
        const n = ++saves;
        await editor.query('update cms_rows set draft_data = $1 where id = $2', [JSON.stringify({ ...rowData(n), title: `edited ${n}` }), id]);
      },
    });
    // Reads always over the 1,000,000-row table; the editor saves rows of the table being written.
    const load = async (saveRows: string[], until?: Promise<unknown>, maxMs = PLATFORM_WINDOW_MS) => {
      const r = read(pubIds, pubTable);
      const s = save(saveRows);
      const cpu = startCpuWindow();
      const res = await openLoop({
        intervalMs: INTERVAL_MS,
        kindOf: (i) => (i % SAVE_EVERY === SAVE_EVERY - 1 ? s : r),
        maxDurationMs: maxMs,
        until,
        drainTimeoutMs: 60_000,
        signal: ctx.signal,
      });
      return { ...res, cpu: cpu.stop() };
    };
    const record = (name: string, res: OpenLoopResult & { cpu: CpuWindow | undefined }, extra = '') => {
      const rd = res.byKind.read;
      const sv = res.byKind.save;
      const errors = (rd?.errors ?? 0) + (sv?.errors ?? 0) + (rd?.unanswered ?? 0) + (sv?.unanswered ?? 0);
      const p: Phase = {
        name,
        read: rd?.latencies ?? [],
        save: sv?.latencies ?? [],
        seconds: res.seconds,
        errors,
        firstError: rd?.firstError ?? sv?.firstError,
        cpu: describeCpu(res.cpu),
        cpuOthers: res.cpu?.othersPct,
        extra: `${extra}; generator lag up to ${res.maxSendLagMs.toFixed(0)} ms`,
      };
      ctx.log(
        `interactive-latency: ${name}: ${res.seconds.toFixed(1)} s, read p50 ${percentile(p.read, 50).toFixed(1)} p99 ${percentile(p.read, 99).toFixed(1)} ms, ` +
          `save p50 ${percentile(p.save, 50).toFixed(1)} p99 ${percentile(p.save, 99).toFixed(1)} ms, ${errors} errors${p.firstError ? ` (${p.firstError})` : ''}; ${p.cpu}${p.extra}`,
      );
      return p;
    };
    const progressOf = async (jobId: string) =>
      (await ctx.pg.query<{ done: number }>('select progress_done::int as done from jobs where id = $1', [jobId])).rows[0]!.done;

    try {
      // Warm-up (connections, caches), not counted.
      await load(pubIds, undefined, 2_000);

      // --- idle ---------------------------------------------------------------------------------
      const idle = record('idle', await load(pubIds, undefined, IDLE_MS));

      // --- the platform: a 1,000,000-row publish --------------------------------------------------
      const publish = await team.request<{ id: string }>('POST', `/v1/projects/${pubProject.id}/publishes`, {}, [202]);
      await untilWriting(ctx, publish.body.id);
      const pubFrom = await progressOf(publish.body.id);
      const pubRun = await load(pubIds);
      const pubTo = await progressOf(publish.body.id);
      // Diagnostic: the same job with the API's DB-pressure signal held on, as if it had fired
      // (the worker halves its chunks and pauses WORKER_PRESSURE_PAUSE_MS before each).
      const pressureKey = `${ctx.queuePrefix}:db-pressure`;
      const holdPressure = setInterval(() => void ctx.redis.set(pressureKey, '1', 'PX', 2_000).catch(() => {}), 500);
      await ctx.redis.set(pressureKey, '1', 'PX', 2_000);
      await sleep(1_000, ctx.signal);
      let pacedRun: Awaited<ReturnType<typeof load>>;
      let pacedFrom: number;
      let pacedTo: number;
      try {
        pacedFrom = await progressOf(publish.body.id);
        pacedRun = await load(pubIds, undefined, PACED_WINDOW_MS);
        pacedTo = await progressOf(publish.body.id);
      } finally {
        clearInterval(holdPressure);
        await ctx.redis.del(pressureKey);
      }
      const pubJob = await stopJob(ctx, team.token, publish.body.id);
      const pubRate = (pubTo - pubFrom) / pubRun.seconds;
      const pacedRate = (pacedTo - pacedFrom) / pacedRun.seconds;
      const platformPublish = record('platform publish', pubRun, `; ${Math.round(pubRate).toLocaleString('en-US')} rows/s${pubJob}`);
      const paced = record('platform publish, pressure held', pacedRun, `; ${Math.round(pacedRate).toLocaleString('en-US')} rows/s`);

      // --- idle again (after a VACUUM of what the publish left), then the control ---------------------
      // The background load of a shared machine drifts: each platform phase is compared with the
      // idle window measured just before it.
      await ctx.pg.query('vacuum cms_rows');
      const idle2 = record('idle (before the import)', await load(impIds, undefined, IDLE_MS));
      // Control, no database work: one core kept busy by a bare loop.
      const hog = spawn(process.execPath, ['-e', `const end = Date.now() + ${IDLE_MS + 2_000}; while (Date.now() < end) {}`], { stdio: 'ignore' });
      let busyCore: Phase;
      try {
        busyCore = record('one busy core', await load(impIds, undefined, IDLE_MS));
      } finally {
        hog.kill('SIGKILL');
      }

      // --- the platform: a 1,000,000-row import ---------------------------------------------------
      const file = ndjsonFile('i', ROWS);
      ctx.log(`interactive-latency: uploading a ${(byteSize(file) / 1024 / 1024).toFixed(0)} MiB NDJSON import`);
      // onError=skip: the import writes from its first chunk (abort would first read the whole file
      // in a validate pass that writes only identifier claims).
      const imp = await postImport(ctx.apiUrl, team.token, impTable, file, { onError: 'skip' }, ctx.signal);
      file.length = 0;
      await untilWriting(ctx, imp.id);
      const impFrom = await progressOf(imp.id);
      const impRun = await load(impIds);
      const impTo = await progressOf(imp.id);
      const impJob = await stopJob(ctx, team.token, imp.id);
      const platformImport = record('platform import', impRun, `; ${Math.round((impTo - impFrom) / impRun.seconds).toLocaleString('en-US')} rows/s${impJob}`);

      // --- the status quo: the same work in one transaction each -----------------------------------
      const sqPublish = statusQuo(ctx, 'update cms_rows set data = draft_data where table_id = $1', [pubTable]);
      const sqPubRun = await load(pubIds, sqPublish.done, STATUS_QUO_MAX_MS);
      const sqPubS = await sqPublish.done;
      const statusQuoPublish = record('status-quo publish', sqPubRun, `; one UPDATE of ${ROWS.toLocaleString('en-US')} rows, ${sqPubS.toFixed(1)} s to commit`);

      // Time-ordered ids, as the platform's uuidv7 are (random ones would make the index work harder).
      const sqImport = statusQuo(
        ctx,
        `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
         select ($3 || lpad(to_hex(g), 12, '0'))::uuid, $1, $2, 'q-' || g, ${SQL_ROW_DATA}
         from generate_series(1, ${ROWS}) g`,
        [impTable, team.teamId, idPrefix()],
      );
      const sqImpRun = await load(impIds, sqImport.done, STATUS_QUO_MAX_MS);
      const sqImpS = await sqImport.done;
      const statusQuoImport = record('status-quo import', sqImpRun, `; one INSERT … SELECT of ${ROWS.toLocaleString('en-US')} rows, ${sqImpS.toFixed(1)} s to commit`);

      return rows({ idle, idle2, busyCore, paced }, platformPublish, platformImport, statusQuoPublish, statusQuoImport);
    } finally {
      agent.destroy();
      await editor.end().catch(() => {});
    }
  },
};

/** The bench rows' ~300-byte data, in SQL (status-quo import and seeding). */
const SQL_ROW_DATA = `jsonb_build_object(
  'title', 'Benchmark row ' || lpad(g::text, 7, '0'),
  'body', left(md5(g::text) || ' ' || md5((g + 1)::text) || ' ' || md5((g + 2)::text) || ' ' || md5((g + 3)::text) || ' ' ||
               md5((g + 4)::text) || ' ' || md5((g + 5)::text) || ' ' || md5((g + 6)::text) || ' ' || md5((g + 7)::text), 226),
  'views', (g::bigint * 7919) % 100000,
  'featured', g % 7 = 0)`;

/** The first 24 characters of a UUID (version 7, variant 8 nibbles), random: ids are this plus 12 hex digits. */
function idPrefix(): string {
  const h = randomBytes(10).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-7${h.slice(12, 15)}-8${h.slice(15, 18)}-`;
}

/** Inserts `n` draft rows in SQL with time-ordered-looking ids of a random prefix; returns their ids. */
async function seedRows(ctx: BenchContext, tableId: string, teamId: string, n: number, tag: string): Promise<string[]> {
  const prefix = idPrefix();
  await ctx.pg.query(
    `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select ($3 || lpad(to_hex(g), 12, '0'))::uuid, $1, $2, $4 || '-' || g, ${SQL_ROW_DATA}
     from generate_series(1, ${n}) g`,
    [tableId, teamId, prefix, tag],
  );
  return Array.from({ length: n }, (_, k) => `${prefix}${(k + 1).toString(16).padStart(12, '0')}`);
}

function getOk(agent: http.Agent, api: URL, path: string, token: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: api.hostname, port: api.port, path, method: 'GET', agent, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`GET row answered ${res.statusCode}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Waits until the job has committed a chunk that wrote rows (past its set-up). */
async function untilWriting(ctx: BenchContext, jobId: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await ctx.pg.query<{ n: number; status: string }>(
      `select (select count(*)::int from job_chunks where job_id = $1 and rows > 0) as n, (select status::text from jobs where id = $1) as status`,
      [jobId],
    );
    if (r.rows[0]!.n > 0) return;
    if (!['queued', 'active'].includes(r.rows[0]!.status)) throw new Error(`job ${jobId} ended ${r.rows[0]!.status} before writing`);
    if (Date.now() > deadline) throw new Error(`job ${jobId} wrote nothing within 120 s`);
    await sleep(100, ctx.signal);
  }
}

/** Cancels the job (the window is over), waits for it to end, and says how far it got. */
async function stopJob(ctx: BenchContext, token: string, jobId: string): Promise<string> {
  await apiRequest(ctx.apiUrl, token, 'POST', `/v1/jobs/${jobId}/cancel`, undefined, { expect: [202, 409] });
  await ctx.waitJobsEnded([jobId], { timeoutMs: 120_000, intervalMs: 100 });
  const r = await ctx.pg.query<{ status: string; done: number; chunks: number; max_ms: number; p50_ms: number; rows_p50: number }>(
    `select j.status::text, j.progress_done::int as done,
            count(c.*)::int as chunks, max(c.duration_ms)::int as max_ms,
            (percentile_disc(0.5) within group (order by c.duration_ms))::int as p50_ms,
            (percentile_disc(0.5) within group (order by c.rows))::int as rows_p50
     from jobs j left join job_chunks c on c.job_id = j.id and c.rows > 0 where j.id = $1 group by j.id`,
    [jobId],
  );
  const x = r.rows[0]!;
  return `; job ${x.status} at ${x.done.toLocaleString('en-US')} rows, ${x.chunks} chunks (median ${x.rows_p50} rows, ${x.p50_ms} ms; longest ${x.max_ms} ms)`;
}

/** Runs one statement in its own transaction on a connection of the bench pool; resolves with its seconds. */
function statusQuo(ctx: BenchContext, text: string, values: unknown[]): { done: Promise<number> } {
  const done = (async () => {
    const client = await ctx.pg.connect();
    try {
      const t0 = performance.now();
      await client.query('begin');
      try {
        await client.query(text, values);
        await client.query('commit');
      } catch (err) {
        await client.query('rollback').catch(() => {});
        throw err;
      }
      return (performance.now() - t0) / 1000;
    } finally {
      client.release();
    }
  })();
  done.catch(() => {});
  return { done };
}

function rows(
  { idle, idle2, busyCore, paced }: { idle: Phase; idle2: Phase; busyCore: Phase; paced: Phase },
  pub: Phase,
  imp: Phase,
  sqPub: Phase,
  sqImp: Phase,
): BenchRow[] {
  const p = (xs: number[], q: number) => percentile(xs, q);
  const fmt = (v: number) => `${v.toFixed(v >= 100 ? 0 : 1)} ms`;
  const limitOf = (ref: Phase) => Math.max(1.5 * p(ref.read, 99), p(ref.read, 99) + 20);
  const verdict = (v: number, limit: number) => `target ≤ ${fmt(limit)}: ${v <= limit ? 'met' : 'MISSED'}`;
  const counts = (ph: Phase) =>
    `${ph.read.length} reads + ${ph.save.length} saves in ${ph.seconds.toFixed(1)} s${ph.errors ? `, ${ph.errors} errors (${ph.firstError})` : ''}; ${ph.cpu}`;
  const quiet = (ph: Phase) =>
    ph.cpuOthers !== undefined && ph.cpuOthers > NOISE_PCT ? ` (NOT QUIET: processes outside this run used ${ph.cpuOthers.toFixed(0)}% of the machine)` : '';
  const noisy = [idle, idle2, busyCore, paced, pub, imp, sqPub, sqImp].filter((ph) => (ph.cpuOthers ?? 0) > NOISE_PCT).map((ph) => ph.name);
  const vsIdle = (ph: Phase, ref: Phase, what: string, extra = ''): BenchRow => ({
    bench: `interactive read p99 · ${what}`,
    platform: { value: p(ph.read, 99), unit: 'ms' },
    baseline: { value: p(ref.read, 99), unit: 'ms' },
    better: 'lower',
    note: `${quiet(ph) ? `${quiet(ph).trim()}; ` : ''}vs the idle window just before (${ref.name}${quiet(ref)}); ${verdict(p(ph.read, 99), limitOf(ref))}; p50 ${fmt(p(ph.read, 50))} (idle ${fmt(p(ref.read, 50))}); ${extra}${counts(ph)}${ph.extra}`,
  });
  const out: BenchRow[] = [
    {
      bench: 'interactive read p50 idle',
      platform: { value: p(idle.read, 50), unit: 'ms' },
      baseline: null,
      better: 'lower',
      note:
        `nothing running on the platform${quiet(idle)}: read p99 ${fmt(p(idle.read, 99))}, save p50 ${fmt(p(idle.save, 50))} p99 ${fmt(p(idle.save, 99))}; ${counts(idle)}${idle.extra}; ` +
        `second idle window (before the import)${quiet(idle2)}: read p50 ${fmt(p(idle2.read, 50))} p99 ${fmt(p(idle2.read, 99))}; ` +
        `${noisy.length ? `machine shared during: ${noisy.join(', ')} (over ${NOISE_PCT}% of its CPU went to other processes: compare those figures with care); ` : 'no other process took more than ' + NOISE_PCT + '% of the CPU in any window; '}` +
        `open loop, one request every ${INTERVAL_MS} ms (reads of random rows of ${ROWS.toLocaleString('en-US')} through the API; every ${SAVE_EVERY}th an editor save), latency from the scheduled time`,
    },
    vsIdle(pub, idle, 'publish', `the status quo (one UPDATE): p50 ${fmt(p(sqPub.read, 50))} p99 ${fmt(p(sqPub.read, 99))} (${sqPub.cpu}); `),
    {
      bench: 'editor save p99 · publish',
      platform: { value: p(pub.save, 99), unit: 'ms' },
      baseline: { value: p(sqPub.save, 99), unit: 'ms' },
      better: 'lower',
      note:
        `saves of random rows of the table being published: through the platform vs the same publish in one transaction; ${verdict(p(pub.save, 99), SAVE_TARGET_MS)}; ` +
        `p50 ${fmt(p(pub.save, 50))} vs ${fmt(p(sqPub.save, 50))}, max ${fmt(Math.max(...pub.save))} vs ${fmt(Math.max(...sqPub.save))} (idle p99 ${fmt(p(idle.save, 99))}); ` +
        `status quo: ${counts(sqPub)}${sqPub.extra}`,
    },
    vsIdle(paced, idle, 'publish, pressure held', `diagnostic: the same publish with the API's DB-pressure signal held on, as if it had fired (halved chunks, a pause before each); save p99 ${fmt(p(paced.save, 99))}; `),
    vsIdle(busyCore, idle2, 'one busy core', 'control, no database work: a bare busy loop on one core; '),
    vsIdle(imp, idle2, 'import', `the status quo (one INSERT … SELECT): p50 ${fmt(p(sqImp.read, 50))} p99 ${fmt(p(sqImp.read, 99))} (${sqImp.cpu}); `),
    {
      bench: 'editor save p99 · import',
      platform: { value: p(imp.save, 99), unit: 'ms' },
      baseline: { value: p(sqImp.save, 99), unit: 'ms' },
      better: 'lower',
      note:
        `saves of random existing rows of the table being imported into: through the platform vs one INSERT … SELECT transaction; ${verdict(p(imp.save, 99), SAVE_TARGET_MS)}; ` +
        `p50 ${fmt(p(imp.save, 50))} vs ${fmt(p(sqImp.save, 50))}, max ${fmt(Math.max(...imp.save))} vs ${fmt(Math.max(...sqImp.save))} (idle p99 ${fmt(p(idle2.save, 99))}); ` +
        `status quo: ${counts(sqImp)}${sqImp.extra}`,
    },
  ];
  return out;
}

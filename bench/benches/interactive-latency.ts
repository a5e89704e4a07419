import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { apiRequest } from '../lib/api';
import { describeCpu, startCpuWindow, type CpuWindow } from '../lib/cpu-sampler';
import { startLoadClient, type IdSet, type LoadWindow } from '../lib/load-client';
import { byteSize, ndjsonFile, postImport } from '../lib/ndjson-import';
import { BENCH_FIELDS } from '../lib/rows';
import { percentile, sleep } from '../lib/stats';
import type { BenchContext, BenchModule, BenchRow } from '../lib/types';

const ROWS = 1_000_000;
/** Rows already in the imported table, the ones the editor saves while the import runs. */
const IMPORT_TABLE_SEED = 10_000;
/** 200 requests/s: one every 5 ms, open loop. */
const INTERVAL_MS = 5;
/** Every SAVE_EVERY-th request is the editor's save (20/s), the others are reads (180/s). */
const SAVE_EVERY = 10;
/**
 * Alternating windows: the work on for WINDOW_MS, off (idle) for WINDOW_MS, CYCLES times
 * (`BENCH_INTERACTIVE_CYCLES`, default 8). More cycles weigh a rare stall of the machine less: at
 * 180 reads a second, 4 cycles give a state 2,880 reads, and one second stalled anywhere on a
 * shared machine (36 slow reads in one full run, where the no-database control missed by more)
 * decides its p99 alone; 8 cycles give 5,760, where it takes two.
 */
const WINDOW_MS = 4_000;
const CYCLES = Math.max(1, Number(process.env.BENCH_INTERACTIVE_CYCLES) || 8);
/** A status-quo transaction is measured until it commits, at most this long. */
const STATUS_QUO_MAX_MS = 240_000;
const EDITOR_POOL = 4;
const SAVE_TARGET_MS = 250;
/** A window where processes outside this run took more of the machine than this is flagged. */
const NOISE_PCT = 10;

/** A job's progress while in one state, and how often the API's pressure signal was up. */
interface Rate {
  rows: number;
  ms: number;
  signal: number;
  samples: number;
  /** PostgreSQL's own work that stalls reads, counted over the windows: checkpoints, autovacuum and autoanalyze of cms_rows. */
  db: DbEvents;
}

interface DbEvents {
  checkpoints: number;
  autovacuums: number;
  autoanalyzes: number;
}

/** What the machine was doing while a request was scheduled. */
type State = 'idle' | 'on' | 'paced' | 'busy-core' | 'between';

interface Window extends LoadWindow {
  seconds: number;
  cpu?: CpuWindow;
}

/**
 * Issue 4: what heavy work does to the studio's own interactive traffic on the shared database.
 * An open-loop generator fires one request every 5 ms (200/s), whatever the answers do, and takes
 * each latency from the scheduled time: reads of random rows through the API
 * (`GET /v1/cms-tables/:id/rows/:rowId`, over 1,000,000 rows) and, every 10th, an editor saving
 * one row of the very table being written, directly (`UPDATE cms_rows SET draft_data = … WHERE
 * id = …` through its own pool of 4, as the studio does). The generator runs in a process of its
 * own (`bench/lib/load-client.ts`), so that the bench process's pauses do not count as latency.
 *
 * The platform's work (a 1,000,000-row publish, then a 1,000,000-row NDJSON import) is measured
 * in alternating windows, so that the background load of a shared machine hits both alike: 4 s
 * with the job running, then the job is cancelled (it stops at its next chunk boundary) and 4 s
 * idle, then `POST /v1/jobs/:id/retry` resumes it from its checkpoint, eight times by default; requests
 * scheduled while the job is stopping or resuming are left out. The publish's cycles add a third
 * window, a diagnostic: the job running with the API's DB-pressure signal held on, as if it had
 * fired. A control alternates idle with a bare busy loop on one core (no database work). The
 * status quo, the same work in one transaction (`UPDATE cms_rows SET data = draft_data WHERE
 * table_id = …`; one INSERT … SELECT of 1,000,000 rows), cannot be cut into windows: it is measured
 * from its BEGIN to its COMMIT. Every window reports the machine's CPU and how much of it went to
 * processes outside this run.
 */
export const interactiveLatency: BenchModule = {
  name: 'interactive-latency',
  description: `reads + editor saves at 200 req/s: idle vs during a ${ROWS.toLocaleString('en-US')}-row publish/import via the platform, and in one transaction`,
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

    // The requests come from a process of their own (see load-client.ts), started before anything is timed.
    const load = await startLoadClient(
      {
        apiUrl: ctx.apiUrl,
        token: team.token,
        databaseUrl: ctx.databaseUrl,
        readTable: pubTable,
        reads: pubIds,
        intervalMs: INTERVAL_MS,
        saveEvery: SAVE_EVERY,
        editorPool: EDITOR_POOL,
      },
      ctx.signal,
    );

    /**
     * Runs the load while `drive` moves the machine between states (it calls `enter`); returns the
     * latencies and CPU per state. Reads always go over the 1,000,000-row table; the editor saves
     * `saveRows`, rows of the table being written.
     */
    const measure = async (saveRows: IdSet, drive: (enter: (s: State) => void) => Promise<void>, maxMs = 600_000) => {
      const windows = new Map<State, Window>();
      const cpuSum = new Map<State, { weight: number; cpu: CpuWindow[] }>();
      let state: State = 'between';
      let since = performance.now();
      load.setState(state);
      let cpu = startCpuWindow();
      let generatorError: unknown;
      const enter = (next: State) => {
        // A drive still going after its generator failed stops at its next change of state.
        if (generatorError !== undefined && next !== 'between') throw generatorError;
        const took = performance.now() - since;
        const c = cpu.stop();
        if (c) {
          const acc = cpuSum.get(state) ?? { weight: 0, cpu: [] };
          acc.weight += took;
          acc.cpu.push({ ...c, busyPct: c.busyPct * took, othersPct: c.othersPct * took, stealPct: c.stealPct * took, runnable: c.runnable * took, ours: Object.fromEntries(Object.entries(c.ours).map(([k, v]) => [k, v * took])) });
          cpuSum.set(state, acc);
        }
        const w = windows.get(state) ?? emptyWindow();
        w.seconds += took / 1000;
        windows.set(state, w);
        state = next;
        since = performance.now();
        load.setState(state);
        cpu = startCpuWindow();
      };
      const running = load.run(saveRows, maxMs);
      // A generator that fails (it exited, Ctrl+C killed it) fails the measurement at once, not
      // when the drive ends (a status-quo transaction may take minutes); one that ends at maxMs
      // waits for the drive.
      const generatorFailed = new Promise<never>((_, reject) =>
        running.catch((err: unknown) => {
          generatorError = err;
          reject(err);
        }),
      );
      generatorFailed.catch(() => {});
      const driving = drive(enter).finally(() => enter('between'));
      driving.catch(() => {});
      try {
        await Promise.race([driving, generatorFailed]);
      } finally {
        load.stop();
      }
      const res = await running;
      for (const [s, lw] of Object.entries(res.windows) as [State, LoadWindow][]) {
        const w = windows.get(s) ?? emptyWindow();
        w.read.push(...lw.read);
        w.readAt.push(...lw.readAt);
        w.save.push(...lw.save);
        w.errors += lw.errors;
        w.firstError ??= lw.firstError;
        windows.set(s, w);
      }
      for (const [s, acc] of cpuSum) {
        const w = windows.get(s)!;
        const avg = (f: (c: CpuWindow) => number) => acc.cpu.reduce((a, c) => a + f(c), 0) / acc.weight;
        const labels = new Set(acc.cpu.flatMap((c) => Object.keys(c.ours)));
        w.cpu = {
          busyPct: avg((c) => c.busyPct),
          othersPct: avg((c) => c.othersPct),
          stealPct: avg((c) => c.stealPct),
          runnable: avg((c) => (Number.isFinite(c.runnable) ? c.runnable : 0)),
          ours: Object.fromEntries([...labels].map((l) => [l, avg((c) => c.ours[l] ?? 0)])),
        };
      }
      return { windows, lag: res.lag };
    };
    const log = (what: string, m: Awaited<ReturnType<typeof measure>>, extra = '') => {
      for (const [s, w] of m.windows) {
        if (s === 'between') continue;
        ctx.log(
          `interactive-latency: ${what} / ${s}: ${w.seconds.toFixed(1)} s, read p50 ${percentile(w.read, 50).toFixed(1)} p99 ${percentile(w.read, 99).toFixed(1)} ms, ` +
            `save p50 ${percentile(w.save, 50).toFixed(1)} p99 ${percentile(w.save, 99).toFixed(1)} ms, ${w.errors} errors${w.firstError ? ` (${w.firstError})` : ''}; ${describeCpu(w.cpu)}`,
        );
      }
      ctx.log(`interactive-latency: ${what}: generator lag up to ${m.lag.toFixed(0)} ms${extra}`);
    };

    const pressureKey = `${ctx.queuePrefix}:db-pressure`;
    let holdPressure: NodeJS.Timeout | undefined;
    const pressure = async (on: boolean) => {
      clearInterval(holdPressure);
      holdPressure = undefined;
      if (on) {
        await ctx.redis.set(pressureKey, '1', 'PX', 2_000);
        holdPressure = setInterval(() => void ctx.redis.set(pressureKey, '1', 'PX', 2_000).catch(() => {}), 500);
      } else await ctx.redis.del(pressureKey);
    };

    /** Alternates the job running (and, with `paced`, running under held pressure) with idle. */
    const cycleJob = (jobId: string, paced: boolean, rates: Record<string, Rate>) => async (enter: (s: State) => void) => {
      await untilWriting(ctx, jobId, 0);
      for (let c = 0; c < CYCLES; c++) {
        const windowsOn: [State, boolean][] = paced ? [['on', false], ['paced', true]] : [['on', false]];
        for (const [s, p] of windowsOn) {
          if (p) {
            await pressure(true);
            await sleep(500, ctx.signal); // the worker reads the signal at most every 100 ms
          }
          const from = await progressOf(ctx, jobId);
          const events0 = await dbEvents(ctx);
          const at = performance.now();
          enter(s);
          // Watched, so that a job that ends inside a window (the publish can finish before the
          // last cycle) ends the measurement there instead of counting idle time as work.
          // Outside the held-pressure windows, is the API's own pressure signal up (it would pace the job)?
          const r0 = (rates[s] ??= { rows: 0, ms: 0, signal: 0, samples: 0, db: { checkpoints: 0, autovacuums: 0, autoanalyzes: 0 } });
          const ended = await runsFor(ctx, jobId, WINDOW_MS, async () => {
            if (p) return;
            r0.samples++;
            if (await ctx.redis.exists(pressureKey)) r0.signal++;
          });
          enter('between');
          r0.rows += (await progressOf(ctx, jobId)) - from;
          const events1 = await dbEvents(ctx);
          for (const k of Object.keys(events1) as (keyof DbEvents)[]) r0.db[k] += events1[k] - events0[k];
          r0.ms += performance.now() - at;
          if (p) await pressure(false);
          if (ended) {
            ctx.log(`interactive-latency: job ${jobId} ended during cycle ${c + 1} of ${CYCLES}; the measurement stops there`);
            return;
          }
        }
        // A job that completed while being stopped (the publish may, in its last cycles) is not retried.
        const status = await stopJob(ctx, team.token, jobId);
        enter('idle');
        await sleep(WINDOW_MS, ctx.signal);
        enter('between');
        if (status === 'completed') {
          ctx.log(`interactive-latency: job ${jobId} completed as cycle ${c + 1} of ${CYCLES} ended; the measurement stops there`);
          return;
        }
        if (c < CYCLES - 1) {
          const chunks = await chunkCount(ctx, jobId);
          await apiRequest(ctx.apiUrl, team.token, 'POST', `/v1/jobs/${jobId}/retry`, undefined, { expect: [202] });
          await untilWriting(ctx, jobId, chunks);
        }
      }
    };

    /**
     * `BENCH_INTERACTIVE_PARTS` (a comma list of publish, control, import, status-quo; all by
     * default) runs only some parts, to iterate on one quickly; the others report empty windows.
     */
    const parts = new Set((process.env.BENCH_INTERACTIVE_PARTS ?? 'publish,control,import,status-quo').split(',').map((x) => x.trim()));
    const skipped = (): Awaited<ReturnType<typeof measure>> => ({ windows: new Map(), lag: 0 });
    try {
      // Warm-up (connections, caches), not counted.
      await measure(pubIds, async () => sleep(2_000, ctx.signal));

      // --- the platform: a 1,000,000-row publish, alternating with idle and with held pressure ----
      const pubRates: Record<string, Rate> = {};
      let pub = skipped();
      let pubJob = 'not run';
      if (parts.has('publish')) {
        const publish = await team.request<{ id: string }>('POST', `/v1/projects/${pubProject.id}/publishes`, {}, [202]);
        try {
          pub = await measure(pubIds, cycleJob(publish.body.id, true, pubRates));
        } finally {
          await pressure(false);
        }
        pubJob = await jobSummary(ctx, publish.body.id);
        log('publish', pub, `; ${pubJob}`);
      }

      // --- control: a bare busy loop on one core, alternating with idle ---------------------------
      let control = skipped();
      if (parts.has('control')) {
        const hog = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
        try {
          hog.kill('SIGSTOP');
          control = await measure(impIds, async (enter) => {
            for (let c = 0; c < CYCLES; c++) {
              hog.kill('SIGCONT');
              enter('busy-core');
              await sleep(WINDOW_MS, ctx.signal);
              hog.kill('SIGSTOP');
              enter('idle');
              await sleep(WINDOW_MS, ctx.signal);
            }
          });
        } finally {
          hog.kill('SIGKILL');
        }
        log('control', control);
      }

      // --- the platform: a 1,000,000-row import, alternating with idle -----------------------------
      const impRates: Record<string, Rate> = {};
      let impRun = skipped();
      let impJob = 'not run';
      if (parts.has('import')) {
        const file = ndjsonFile('i', ROWS);
        ctx.log(`interactive-latency: uploading a ${(byteSize(file) / 1024 / 1024).toFixed(0)} MiB NDJSON import`);
        // onError=skip: the import writes from its first chunk (abort would first read the whole file
        // in a validate pass that writes only identifier claims).
        const imp = await postImport(ctx.apiUrl, team.token, impTable, file, { onError: 'skip' }, ctx.signal);
        file.length = 0;
        impRun = await measure(impIds, cycleJob(imp.id, false, impRates));
        impJob = await jobSummary(ctx, imp.id);
        log('import', impRun, `; ${impJob}`);
      }

      // --- the status quo: the same work in one transaction each -----------------------------------
      let sqPub = skipped();
      let sqImp = skipped();
      let sqPubS = NaN;
      let sqImpS = NaN;
      if (parts.has('status-quo')) {
      const sqPublish = statusQuo(ctx, 'update cms_rows set data = draft_data where table_id = $1', [pubTable]);
      sqPub = await measure(pubIds, async (enter) => {
        enter('on');
        await sqPublish.done;
      });
      sqPubS = await sqPublish.done;
      log('status-quo publish', sqPub, `; one UPDATE of ${ROWS.toLocaleString('en-US')} rows, ${sqPubS.toFixed(1)} s to commit`);

      // Time-ordered ids, as the platform's uuidv7 are (random ones would make the index work harder).
      const sqImport = statusQuo(
        ctx,
        `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
         select ($3 || lpad(to_hex(g), 12, '0'))::uuid, $1, $2, 'q-' || g, ${SQL_ROW_DATA}
         from generate_series(1, ${ROWS}) g`,
        [impTable, team.teamId, idPrefix()],
      );
      sqImp = await measure(impIds, async (enter) => {
        enter('on');
        await sqImport.done;
      });
      sqImpS = await sqImport.done;
      log('status-quo import', sqImp, `; one INSERT … SELECT of ${ROWS.toLocaleString('en-US')} rows, ${sqImpS.toFixed(1)} s to commit`);
      }

      const rate = (r: Rate | undefined) => (r && r.ms > 0 ? Math.round((r.rows * 1000) / r.ms) : 0);
      const signal = (r: Rate | undefined) =>
        `the API's pressure signal was up in ${r?.signal ?? 0} of ${r?.samples ?? 0} samples (every 100 ms) while on; ` +
        `PostgreSQL meanwhile: ${r?.db.checkpoints ?? 0} checkpoints, ${r?.db.autovacuums ?? 0} autovacuums and ${r?.db.autoanalyzes ?? 0} autoanalyzes of cms_rows`;
      return rows({
        pub: pub.windows,
        pubText: `publish ${rate(pubRates.on).toLocaleString('en-US')} rows/s while on (${rate(pubRates.paced).toLocaleString('en-US')} under held pressure); ${signal(pubRates.on)}; ${pubJob}`,
        control: control.windows,
        imp: impRun.windows,
        impText: `import ${rate(impRates.on).toLocaleString('en-US')} rows/s while on; ${signal(impRates.on)}; ${impJob}`,
        sqPub: sqPub.windows.get('on') ?? emptyWindow(),
        sqPubText: `one UPDATE of ${ROWS.toLocaleString('en-US')} rows, ${sqPubS.toFixed(1)} s from BEGIN to COMMIT`,
        sqImp: sqImp.windows.get('on') ?? emptyWindow(),
        sqImpText: `one INSERT … SELECT of ${ROWS.toLocaleString('en-US')} rows, ${sqImpS.toFixed(1)} s from BEGIN to COMMIT`,
        lag: Math.max(pub.lag, control.lag, impRun.lag, sqPub.lag, sqImp.lag),
      });
    } finally {
      clearInterval(holdPressure);
      await load.close();
    }
  },
};

function emptyWindow(): Window {
  return { read: [], readAt: [], save: [], errors: 0, seconds: 0 };
}

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

/** Inserts `n` draft rows in SQL with time-ordered-looking ids of a random prefix; returns their ids (idAt). */
async function seedRows(ctx: BenchContext, tableId: string, teamId: string, n: number, tag: string): Promise<IdSet> {
  const prefix = idPrefix();
  await ctx.pg.query(
    `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select ($3 || lpad(to_hex(g), 12, '0'))::uuid, $1, $2, $4 || '-' || g, ${SQL_ROW_DATA}
     from generate_series(1, ${n}) g`,
    [tableId, teamId, prefix, tag],
  );
  return { prefix, count: n };
}

async function progressOf(ctx: BenchContext, jobId: string): Promise<number> {
  return (await ctx.pg.query<{ done: number }>('select progress_done::int as done from jobs where id = $1', [jobId])).rows[0]!.done;
}

/** Counters of PostgreSQL's background work (PostgreSQL 17's pg_stat_checkpointer; zeros where a view is missing). */
async function dbEvents(ctx: BenchContext): Promise<DbEvents> {
  const r = await ctx.pg
    .query<DbEvents>(
      `select (select (num_timed + num_requested)::int from pg_stat_checkpointer) as checkpoints,
              coalesce((select autovacuum_count::int from pg_stat_user_tables where relname = 'cms_rows'), 0) as autovacuums,
              coalesce((select autoanalyze_count::int from pg_stat_user_tables where relname = 'cms_rows'), 0) as autoanalyzes`,
    )
    .catch(() => ({ rows: [{ checkpoints: 0, autovacuums: 0, autoanalyzes: 0 }] }));
  return r.rows[0]!;
}

async function chunkCount(ctx: BenchContext, jobId: string): Promise<number> {
  return (await ctx.pg.query<{ n: number }>('select count(*)::int as n from job_chunks where job_id = $1 and rows > 0', [jobId])).rows[0]!.n;
}

/** Waits until the job has committed more than `after` chunks that wrote rows (past its set-up). */
async function untilWriting(ctx: BenchContext, jobId: string, after: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await ctx.pg.query<{ n: number; status: string }>(
      `select (select count(*)::int from job_chunks where job_id = $1 and rows > 0) as n, (select status::text from jobs where id = $1) as status`,
      [jobId],
    );
    if (r.rows[0]!.n > after) return;
    if (!['queued', 'active'].includes(r.rows[0]!.status)) throw new Error(`job ${jobId} ended ${r.rows[0]!.status} before writing`);
    if (Date.now() > deadline) throw new Error(`job ${jobId} wrote nothing within 120 s`);
    await sleep(25, ctx.signal);
  }
}

/** Waits `ms` while the job runs; true when it ended (completed, failed, cancelled) meanwhile. */
async function runsFor(ctx: BenchContext, jobId: string, ms: number, tick?: () => Promise<void>): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await tick?.();
    const r = await ctx.pg.query<{ status: string }>('select status::text from jobs where id = $1', [jobId]);
    if (!['queued', 'active'].includes(r.rows[0]!.status)) return true;
    await sleep(Math.min(100, Math.max(0, end - performance.now())), ctx.signal);
  }
  return false;
}

/** Cancels the job (it stops at its next chunk boundary; 409: it had ended already) and waits for it to end; its final status. */
async function stopJob(ctx: BenchContext, token: string, jobId: string): Promise<string> {
  await apiRequest(ctx.apiUrl, token, 'POST', `/v1/jobs/${jobId}/cancel`, undefined, { expect: [202, 409] });
  const { statuses } = await ctx.waitJobsEnded([jobId], { timeoutMs: 120_000, intervalMs: 25 });
  return Object.keys(statuses)[0] ?? 'unknown';
}

async function jobSummary(ctx: BenchContext, jobId: string): Promise<string> {
  const r = await ctx.pg.query<{ status: string; done: number; chunks: number; max_ms: number; p50_ms: number; rows_p50: number }>(
    `select j.status::text, j.progress_done::int as done,
            count(c.*)::int as chunks, max(c.duration_ms)::int as max_ms,
            (percentile_disc(0.5) within group (order by c.duration_ms))::int as p50_ms,
            (percentile_disc(0.5) within group (order by c.rows))::int as rows_p50
     from jobs j left join job_chunks c on c.job_id = j.id and c.rows > 0 where j.id = $1 group by j.id`,
    [jobId],
  );
  const x = r.rows[0]!;
  return `job ${x.status} at ${x.done.toLocaleString('en-US')} rows, ${x.chunks} chunks (median ${x.rows_p50} rows, ${x.p50_ms} ms; longest ${x.max_ms} ms)`;
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

function rows(m: {
  pub: Map<State, Window>;
  pubText: string;
  control: Map<State, Window>;
  imp: Map<State, Window>;
  impText: string;
  sqPub: Window;
  sqPubText: string;
  sqImp: Window;
  sqImpText: string;
  lag: number;
}): BenchRow[] {
  const p = (xs: number[], q: number) => percentile(xs, q);
  const fmt = (v: number) => `${v.toFixed(v >= 100 ? 0 : 1)} ms`;
  const get = (w: Map<State, Window>, s: State) => w.get(s) ?? emptyWindow();
  const limitOf = (idle: Window) => Math.max(1.5 * p(idle.read, 99), p(idle.read, 99) + 20);
  const verdict = (v: number, limit: number) => `target ≤ ${fmt(limit)}: ${v <= limit ? 'met' : 'MISSED'}`;
  const cpu = (w: Window) =>
    `${describeCpu(w.cpu)}${w.cpu && w.cpu.othersPct > NOISE_PCT ? ' NOT QUIET: other processes took the machine' : ''}`;
  const counts = (w: Window) => `${w.read.length} reads + ${w.save.length} saves in ${w.seconds.toFixed(1)} s${w.errors ? `, ${w.errors} errors (${w.firstError})` : ''}`;
  const idlePub = get(m.pub, 'idle');
  const idleCtl = get(m.control, 'idle');
  const idleImp = get(m.imp, 'idle');
  const on = get(m.pub, 'on');
  const paced = get(m.pub, 'paced');
  const busy = get(m.control, 'busy-core');
  const impOn = get(m.imp, 'on');
  /** Where in their windows the reads over the target fall: a run that starts unpaced shows in the first second. */
  const whenSlow = (w: Window, limit: number) => {
    const bySecond = Array.from({ length: Math.ceil(WINDOW_MS / 1000) + 1 }, () => 0);
    for (const r of w.readAt) if (r.ms > limit) bySecond[Math.min(bySecond.length - 1, Math.floor(r.offset / 1000))]!++;
    const byWindow: number[] = [];
    for (const r of w.readAt) if (r.ms > limit) byWindow[r.window] = (byWindow[r.window] ?? 0) + 1;
    return (
      `reads over ${fmt(limit)} by second of their window: ${bySecond.map((n, i) => (i < bySecond.length - 1 ? `${i}–${i + 1} s ${n}` : `later ${n}`)).join(', ')}; ` +
      `by window: ${Array.from(byWindow, (n) => n ?? 0).join(', ')}`
    );
  };
  const readRow = (bench: string, w: Window, idle: Window, note: string): BenchRow => ({
    bench,
    platform: { value: p(w.read, 99), unit: 'ms' },
    baseline: { value: p(idle.read, 99), unit: 'ms' },
    better: 'lower',
    note:
      `vs the idle windows between (p50 ${fmt(p(w.read, 50))} vs ${fmt(p(idle.read, 50))}); ${verdict(p(w.read, 99), limitOf(idle))}; ${whenSlow(w, limitOf(idle))}; ${note}` +
      `${counts(w)}, ${cpu(w)}; idle: ${counts(idle)}, ${cpu(idle)}`,
  });
  return [
    {
      bench: 'interactive read p50 idle',
      platform: { value: p(idlePub.read, 50), unit: 'ms' },
      baseline: null,
      better: 'lower',
      note:
        `the publish's idle windows: read p99 ${fmt(p(idlePub.read, 99))}, save p50 ${fmt(p(idlePub.save, 50))} p99 ${fmt(p(idlePub.save, 99))}; ` +
        `the import's: read p50 ${fmt(p(idleImp.read, 50))} p99 ${fmt(p(idleImp.read, 99))}; ` +
        `open loop, one request every ${INTERVAL_MS} ms (reads of random rows of ${ROWS.toLocaleString('en-US')} through the API, every ${SAVE_EVERY}th an editor save), ` +
        `latency from the scheduled time, generator lag up to ${m.lag.toFixed(0)} ms; ${CYCLES} × ${WINDOW_MS / 1000} s windows of each state`,
    },
    readRow('interactive read p99 · one busy core', busy, idleCtl, 'control: a bare busy loop on one core, no database work; '),
    readRow('interactive read p99 · publish', on, idlePub, `${m.pubText}; the status quo (one UPDATE): p50 ${fmt(p(m.sqPub.read, 50))} p99 ${fmt(p(m.sqPub.read, 99))}; `),
    readRow(
      'interactive read p99 · publish, paced',
      paced,
      idlePub,
      `diagnostic: the same publish with the API's DB-pressure signal held on, as if it had fired (halved chunks, a WORKER_PRESSURE_PAUSE_MS pause before each); `,
    ),
    {
      bench: 'editor save p99 · publish',
      platform: { value: p(on.save, 99), unit: 'ms' },
      baseline: { value: p(m.sqPub.save, 99), unit: 'ms' },
      better: 'lower',
      note:
        `saves of random rows of the table being published, through the platform vs one transaction; ${verdict(p(on.save, 99), SAVE_TARGET_MS)}; ` +
        `p50 ${fmt(p(on.save, 50))} vs ${fmt(p(m.sqPub.save, 50))}, max ${fmt(Math.max(...on.save))} vs ${fmt(Math.max(...m.sqPub.save))} (idle p99 ${fmt(p(idlePub.save, 99))}); ` +
        `status quo: ${m.sqPubText}; ${counts(m.sqPub)}, ${cpu(m.sqPub)}`,
    },
    readRow('interactive read p99 · import', impOn, idleImp, `${m.impText}; the status quo (one INSERT … SELECT): p50 ${fmt(p(m.sqImp.read, 50))} p99 ${fmt(p(m.sqImp.read, 99))}; `),
    {
      bench: 'editor save p99 · import',
      platform: { value: p(impOn.save, 99), unit: 'ms' },
      baseline: { value: p(m.sqImp.save, 99), unit: 'ms' },
      better: 'lower',
      note:
        `saves of random existing rows of the table being imported into, through the platform vs one transaction; ${verdict(p(impOn.save, 99), SAVE_TARGET_MS)}; ` +
        `p50 ${fmt(p(impOn.save, 50))} vs ${fmt(p(m.sqImp.save, 50))}, max ${fmt(Math.max(...impOn.save))} vs ${fmt(Math.max(...m.sqImp.save))} (idle p99 ${fmt(p(idleImp.save, 99))}); ` +
        `status quo: ${m.sqImpText}; ${counts(m.sqImp)}, ${cpu(m.sqImp)}`,
    },
  ];
}

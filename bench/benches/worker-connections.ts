import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { apiRequest, TeamClient } from '../lib/api';
import { deleteKeys, startExtraPlatform, startWorkerProcess, type ExtraPlatform, type WorkerProcess } from '../lib/extra-platform';
import { byteSize, ndjsonFile, postImport } from '../lib/ndjson-import';
import { describeCpu, startCpuWindow } from '../lib/cpu-sampler';
import { BENCH_FIELDS, insertOps } from '../lib/rows';
import { percentile, sleep } from '../lib/stats';
import type { BenchModule } from '../lib/types';

const BUDGET = 6;
const TEAMS = 3;
const IMPORTS_PER_TEAM = 2;
const IMPORT_ROWS = 100_000;
const BULK_WRITES_PER_TEAM = 3;
const BULK_OPERATIONS = 25_000;
const SAMPLE_MS = 100;
/** The mix runs at most this long; what is left is then cancelled (sampling goes on until it ends). */
const WINDOW_MS = 45_000;
const CHUNK_TARGET_MS = 250;
const ZOMBIE_TTL_MS = 3_000;

/**
 * Issue 4: the connections all workers hold stay within WORKER_DB_BUDGET, however many worker
 * processes run. A platform is started with WORKER_DB_BUDGET=6 in a database of its own (so that
 * only its workers' sessions are counted), plus a second worker process with the same settings;
 * both drain a mix of imports and bulk writes of several teams. `pg_stat_activity` is sampled
 * every 100 ms (application_name = 'worker', that database): the maximum must never exceed the
 * budget. Also the longest chunk transaction (job_chunks.duration_ms, by PostgreSQL's clock; with
 * worker_ms beside it, the same chunks as the workers timed them, their own delays included)
 * at the default chunk budget (WORKER_CHUNK_BUDGET_MS=200), against 250 ms.
 *
 * BENCH_CHUNK_BUDGET_MS=<ms> and BENCH_WORKER_CONCURRENCY=<n> run both workers with another
 * WORKER_CHUNK_BUDGET_MS or WORKER_CONCURRENCY (experiments), and
 * BENCH_ZOMBIE=1 adds a diagnostic: a worker paused past its lease comes back (see below).
 */
export const workerConnections: BenchModule = {
  name: 'worker-connections',
  description: `connections of 2 worker processes (pg_stat_activity every ${SAMPLE_MS} ms) vs WORKER_DB_BUDGET=${BUDGET}; longest chunk tx`,
  async run(ctx) {
    const dbName = `bench_conn_${randomBytes(4).toString('hex')}`;
    await ctx.pg.query(`create database ${dbName}`);
    const url = new URL(ctx.databaseUrl);
    url.pathname = `/${dbName}`;
    const databaseUrl = url.toString();
    let extra: ExtraPlatform | undefined;
    let second: WorkerProcess | undefined;
    const own = new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'bench' });
    own.on('error', () => {});
    let stopSampler = () => {};
    try {
      ctx.log(`worker-connections: a platform with WORKER_DB_BUDGET=${BUDGET} in database ${dbName}, and a second worker`);
      const env: Record<string, string> = { WORKER_DB_BUDGET: String(BUDGET) };
      // For experiments only: another chunk budget for both workers (the row is about the default).
      if (process.env.BENCH_CHUNK_BUDGET_MS) env.WORKER_CHUNK_BUDGET_MS = process.env.BENCH_CHUNK_BUDGET_MS;
      if (process.env.BENCH_WORKER_CONCURRENCY) env.WORKER_CONCURRENCY = process.env.BENCH_WORKER_CONCURRENCY;
      const chunkBudgetMs = Number(env.WORKER_CHUNK_BUDGET_MS ?? 200);
      // BENCH_ZOMBIE=1 adds the zombie diagnostic (below), with short leases so it takes seconds.
      const zombie = process.env.BENCH_ZOMBIE === '1';
      if (zombie) env.WORKER_DB_BUDGET_TTL_MS = String(ZOMBIE_TTL_MS);
      const workerEnv = () => ({ ...env, DATABASE_URL: databaseUrl, REDIS_URL: ctx.redisUrl, QUEUE_PREFIX: extra!.queuePrefix, BLOB_DIR: extra!.platform.blobDir });
      extra = await startExtraPlatform({ databaseUrl, redisUrl: ctx.redisUrl, env, tag: 'conn', signal: ctx.signal });
      const plat = extra.platform;
      second = await startWorkerProcess(workerEnv());
      const shares = await ctx.redis.hgetall(`${extra.queuePrefix}:db-budget:holders`);

      // --- sampling --------------------------------------------------------------------------------
      let max = 0;
      let maxActive = 0;
      let samples = 0;
      let over = 0;
      // Where the worker sessions inside a transaction are, per sample: running in PostgreSQL, waiting
      // on something in PostgreSQL (wait_event), or waiting for the worker process to send the next
      // statement ('idle in transaction': the Node side of the chunk).
      const inTx: Record<string, number> = {};
      let counts: number[] = [];
      let maxParallel = 0;
      const sampleOnce = async () => {
        // Parallel query workers of a worker's statement show with its application_name too; they
        // are not connections (they count against max_worker_processes): counted apart.
        const r = await ctx.pg.query<{ client: boolean; state: string | null; wait: string | null; n: number }>(
          `select backend_type = 'client backend' as client, state,
                  case when state = 'active' and wait_event_type is not null then wait_event_type || ':' || wait_event end as wait,
                  count(*)::int as n
           from pg_stat_activity where datname = $1 and application_name = 'worker' group by 1, 2, 3`,
          [dbName],
        );
        let n = 0;
        let active = 0;
        let parallel = 0;
        for (const row of r.rows) {
          if (!row.client) {
            parallel += row.n;
            continue;
          }
          n += row.n;
          if (row.state !== 'idle') active += row.n;
          const where =
            row.state === 'idle in transaction' ? 'worker process' : row.state === 'active' ? (row.wait ?? 'running') : undefined;
          if (where) inTx[where] = (inTx[where] ?? 0) + row.n;
        }
        samples++;
        counts.push(n);
        maxParallel = Math.max(maxParallel, parallel);
        max = Math.max(max, n);
        maxActive = Math.max(maxActive, active);
        if (n > BUDGET) over++;
      };
      // Sampled from before the first job is posted until the last one ended.
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const tick = performance.now();
          await sampleOnce();
          await sleep(Math.max(0, SAMPLE_MS - (performance.now() - tick)), ctx.signal);
        }
      })();
      sampler.catch(() => {});
      stopSampler = () => (sampling = false);
      const stopSampling = async () => {
        sampling = false;
        await sampler;
      };
      // A clean start (superuser only, as interactive-latency's after its seeding): the benches before
      // leave up to shared_buffers of dirty pages and a checkpoint due (interactive-latency's status
      // quo writes 2,000,000 rows just before), which this mix would otherwise write out for them.
      const preCheckpoint = await pgBackground(ctx.pg);
      const checkpointed = await ctx.pg.query('checkpoint').then(
        () => true,
        () => false,
      );
      // The checkpointer counts its checkpoint a moment after the command returns: wait for it
      // (at most 2 s), so that the figures below are the mix's alone.
      let pg0 = await pgBackground(ctx.pg);
      for (let i = 0; checkpointed && preCheckpoint && pg0 && i < 20 && pg0.requested === preCheckpoint.requested; i++) {
        await sleep(100, ctx.signal);
        pg0 = await pgBackground(ctx.pg);
      }
      const ownCheckpoint = !checkpointed
        ? 'no CHECKPOINT at the start: not allowed'
        : preCheckpoint && pg0 && pg0.requested > preCheckpoint.requested
          ? 'the one at its start not counted'
          : 'the one at its start perhaps counted: not seen within 2 s';
      const cpu = startCpuWindow();
      const t0 = performance.now();

      // --- the mix -------------------------------------------------------------------------------
      const file = ndjsonFile('c', IMPORT_ROWS);
      const jobs: { id: string; token: string }[] = [];
      const teams: { team: TeamClient; projectId: string }[] = [];
      for (let t = 0; t < TEAMS; t++) {
        const created = await apiRequest(plat.apiUrl, plat.adminToken, 'POST', '/v1/admin/teams', { name: `bench: connections ${t}` }, { expect: [201] });
        const team = new TeamClient(plat.apiUrl, created.body.id, created.body.token, ctx.signal);
        const project = await team.createProject('connections');
        teams.push({ team, projectId: project.id });
        for (let i = 0; i < IMPORTS_PER_TEAM; i++) {
          const table = await team.createTable(project.id, `import ${i}`, BENCH_FIELDS);
          jobs.push({ id: (await postImport(plat.apiUrl, team.token, table.id, file, {}, ctx.signal)).id, token: team.token });
        }
        for (let i = 0; i < BULK_WRITES_PER_TEAM; i++) {
          const table = await team.createTable(project.id, `bulk ${i}`, BENCH_FIELDS);
          jobs.push({ id: (await team.bulkWrite(table.id, { operations: insertOps(`w${t}-${i}`, BULK_OPERATIONS) })).id, token: team.token });
        }
      }
      const ids = jobs.map((j) => j.id);

      const openJobs = async () =>
        (await own.query<{ n: number }>(`select count(*)::int as n from jobs where id = any($1::uuid[]) and status in ('queued', 'active')`, [ids])).rows[0]!.n;
      let cancelled = false;
      for (;;) {
        if ((await openJobs()) === 0) break;
        if (!cancelled && performance.now() - t0 > WINDOW_MS) {
          cancelled = true;
          for (const j of jobs) await apiRequest(plat.apiUrl, j.token, 'POST', `/v1/jobs/${j.id}/cancel`, undefined, { expect: [202, 409] });
        }
        if (performance.now() - t0 > WINDOW_MS + 120_000) throw new Error('the mix did not end within 120 s of its cancellation');
        await sleep(500, ctx.signal);
      }
      await stopSampling();
      const seconds = (performance.now() - t0) / 1000;
      const cpuText = describeCpu(cpu.stop());
      const pg1 = await pgBackground(ctx.pg);
      const d = (k: keyof PgBackground) => (pg1![k] - pg0![k]).toLocaleString('en-US');
      const pgText =
        pg0 && pg1
          ? `PostgreSQL meanwhile (whole server): checkpoints begun ${d('requested')} requested + ${d('timed')} timed (${ownCheckpoint}); ` +
            `buffers written out by client backends: ${d('backendShared')} from shared buffers (dirty pages they had to evict) and ${d('backendRing')} from their own bulk-write rings (COPY's, by design); ` +
            `by the background writer ${d('bgwriterWrites')}, by the checkpointer ${d('checkpointerWrites')}`
          : `PostgreSQL meanwhile: n/a (pg_stat_checkpointer / pg_stat_io not readable; ${ownCheckpoint})`;

      // --- diagnostic (BENCH_ZOMBIE=1): a worker paused past its lease, then back -------------------
      // The platform's worker (the larger share) is stopped (SIGSTOP: a long GC pause, a frozen VM)
      // until its lease expired; the second worker grows into the share it left and a third worker
      // starts; then the first resumes and works on with the connections it had: all counted again
      // under load.
      let zombieText = '';
      if (zombie) {
        const before = { max, over, samples, maxActive, inTx: { ...inTx }, counts };
        max = 0;
        counts = [];
        const paused = listenerPid(Number(new URL(plat.workerUrl).port));
        process.kill(paused, 'SIGSTOP');
        await sleep(ZOMBIE_TTL_MS + 1_500, ctx.signal);
        const third = await startWorkerProcess(workerEnv());
        try {
          const sharesNow = await ctx.redis.hgetall(`${extra.queuePrefix}:db-budget:holders`);
          process.kill(paused, 'SIGCONT');
          const more: string[] = [];
          for (const [t, { team, projectId }] of teams.entries()) {
            for (let i = 0; i < IMPORTS_PER_TEAM; i++) {
              const table = await team.createTable(projectId, `zombie import ${i}`, BENCH_FIELDS);
              more.push((await postImport(plat.apiUrl, team.token, table.id, file, {}, ctx.signal)).id);
            }
            for (let i = 0; i < BULK_WRITES_PER_TEAM; i++) {
              const table = await team.createTable(projectId, `zombie ${i}`, BENCH_FIELDS);
              more.push((await team.bulkWrite(table.id, { operations: insertOps(`z${t}-${i}`, BULK_OPERATIONS) })).id);
            }
          }
          const z0 = performance.now();
          let zSamples = 0;
          for (;;) {
            const tick = performance.now();
            await sampleOnce();
            zSamples++;
            if (zSamples % 10 === 0) {
              const r = await own.query<{ n: number }>(`select count(*)::int as n from jobs where id = any($1::uuid[]) and status in ('queued', 'active')`, [more]);
              if (r.rows[0]!.n === 0) break;
            }
            if (performance.now() - z0 > 90_000) break;
            await sleep(Math.max(0, SAMPLE_MS - (performance.now() - tick)), ctx.signal);
          }
          const sharesEnd = await ctx.redis.hgetall(`${extra.queuePrefix}:db-budget:holders`);
          const zStatus = await own.query<{ status: string; n: number }>(
            'select status::text, count(*)::int as n from jobs where id = any($1::uuid[]) group by 1 order by 1',
            [more],
          );
          zombieText =
            `; zombie diagnostic (leases of ${ZOMBIE_TTL_MS} ms): the platform's worker was paused past its lease, the others took its share ` +
            `(shares then ${Object.values(sharesNow).join(' + ')}, with a third worker), then it resumed: median ${percentile(counts, 50)}, max ${max} connections in ${zSamples} samples (budget ${BUDGET}), ` +
            `${over} samples over the budget; shares at the end ${Object.values(sharesEnd).join(' + ')}; jobs ${zStatus.rows.map((r) => `${r.n} ${r.status}`).join(', ')}`;
          ctx.log(`worker-connections${zombieText}`);
        } finally {
          process.kill(paused, 'SIGCONT');
          await third.stop();
        }
        ({ max, over, samples, maxActive, counts } = before);
        for (const k of Object.keys(inTx)) delete inTx[k];
        Object.assign(inTx, before.inTx);
      }

      const outcome = await own.query<{ status: string; n: number }>(
        'select status::text, count(*)::int as n from jobs where id = any($1::uuid[]) group by status order by 1',
        [ids],
      );
      const chunks = (
        await own.query<{
          n: number; max_ms: number; p99_ms: number; p50_ms: number; rows: number; owners: number; over: number;
          w_max: number | null; w_p99: number | null; w_p50: number | null; w_over: number; w_n: number;
        }>(
          `select count(*)::int as n, max(c.duration_ms)::int as max_ms,
                  max(c.worker_ms)::int as w_max, count(c.worker_ms)::int as w_n,
                  (percentile_disc(0.99) within group (order by c.worker_ms))::int as w_p99,
                  (percentile_disc(0.5) within group (order by c.worker_ms))::int as w_p50,
                  count(*) filter (where c.worker_ms > ${CHUNK_TARGET_MS})::int as w_over,
                  (percentile_disc(0.99) within group (order by c.duration_ms))::int as p99_ms,
                  (percentile_disc(0.5) within group (order by c.duration_ms))::int as p50_ms,
                  coalesce(sum(c.rows), 0)::int as rows,
                  count(*) filter (where c.duration_ms > ${CHUNK_TARGET_MS})::int as over
           from job_chunks c where c.job_id = any($1::uuid[]) and c.rows > 0`,
          [ids],
        )
      ).rows[0]!;
      const byType = await own.query<{ type: string; max_ms: number; n: number }>(
        `select j.type, max(c.duration_ms)::int as max_ms, count(*)::int as n from job_chunks c join jobs j on j.id = c.job_id
         where c.job_id = any($1::uuid[]) and c.rows > 0 group by j.type order by 1`,
        [ids],
      );
      const long = (
        await own.query<{ n: number; rows_ratio: number }>(
          `with c as (select job_id, rows, duration_ms from job_chunks where job_id = any($1::uuid[]) and rows > 0),
                m as (select job_id, percentile_cont(0.5) within group (order by rows) as job_rows from c group by job_id)
           select count(*)::int as n, coalesce(avg(c.rows / nullif(m.job_rows, 0)), 0)::float8 as rows_ratio
           from c join m using (job_id) where c.duration_ms > ${CHUNK_TARGET_MS}`,
          [ids],
        )
      ).rows[0]!;
      const txTotal = Object.values(inTx).reduce((a, b) => a + b, 0);
      const whereText = Object.entries(inTx)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 5)
        .map(([k, v]) => `${k} ${((100 * v) / txTotal).toFixed(0)}%`)
        .join(', ');
      const statuses = outcome.rows.map((r) => `${r.n} ${r.status}`).join(', ');
      const shareText = Object.values(shares).join(' + ');
      return [
        {
          bench: 'worker connections max',
          platform: { value: max, unit: 'connections' },
          baseline: { value: BUDGET, unit: 'connections' },
          better: 'lower',
          note:
            `max of ${samples} samples of pg_stat_activity (application_name 'worker') every ${SAMPLE_MS} ms over ${seconds.toFixed(1)} s, ` +
            `2 worker processes, WORKER_DB_BUDGET ${BUDGET} (baseline column: the budget, not a measurement); ` +
            `${over === 0 ? 'never exceeded' : `EXCEEDED in ${over} samples`}; at most ${maxActive} not idle (client backends; besides, up to ${maxParallel} parallel query workers of theirs); leased shares ${shareText}; ` +
            `mix: ${TEAMS} teams × (${IMPORTS_PER_TEAM} imports of ${IMPORT_ROWS.toLocaleString('en-US')} rows (${(byteSize(file) / 1024 / 1024).toFixed(0)} MiB) + ` +
            `${BULK_WRITES_PER_TEAM} bulk writes of ${BULK_OPERATIONS.toLocaleString('en-US')} inserts): ${statuses}${cancelled ? ` (rest cancelled after ${WINDOW_MS / 1000} s)` : ''}${zombieText}`,
        },
        {
          bench: 'worker-connections longest chunk tx',
          platform: { value: chunks.max_ms, unit: 'ms' },
          baseline: { value: CHUNK_TARGET_MS, unit: 'ms' },
          better: 'lower',
          note:
            `max job_chunks.duration_ms (PostgreSQL's clock: BEGIN to the checkpoint statement, which the COMMIT follows in the same query) of ${chunks.n} writing chunks (${chunks.rows.toLocaleString('en-US')} rows), p50 ${chunks.p50_ms} ms, p99 ${chunks.p99_ms} ms, ` +
            `${chunks.over} over ${CHUNK_TARGET_MS} ms (their rows ${long.rows_ratio.toFixed(2)}× their job's median chunk); ` +
            `as the workers timed them (worker_ms: first statement sent to the COMMIT's answer, their own delays included; ${chunks.w_n} of ${chunks.n} recorded): max ${chunks.w_max ?? '–'} ms, p50 ${chunks.w_p50 ?? '–'}, p99 ${chunks.w_p99 ?? '–'}, ${chunks.w_over} over ${CHUNK_TARGET_MS} ms; worker sessions not idle, by sample: ${whereText}; ${cpuText}; ${pgText}; longest by type: ${byType.rows.map((r) => `${r.type} ${r.max_ms} ms (${r.n})`).join(', ')}; target ≤ ${CHUNK_TARGET_MS} ms at WORKER_CHUNK_BUDGET_MS ${chunkBudgetMs}${env.WORKER_CONCURRENCY ? ` and WORKER_CONCURRENCY ${env.WORKER_CONCURRENCY}` : ''}: ${chunks.max_ms <= CHUNK_TARGET_MS ? 'met' : 'MISSED'} (baseline column: the target)`,
        },
      ];
    } finally {
      stopSampler();
      await second?.stop().catch(() => {});
      await extra?.stop().catch(() => {});
      await own.end().catch(() => {});
      if (extra) await deleteKeys(ctx.redis, `${extra.queuePrefix}:*`).catch(() => {});
      await ctx.pg.query(`drop database if exists ${dbName} with (force)`).catch((err: unknown) => ctx.log(`worker-connections: could not drop ${dbName}: ${String(err)}`));
    }
  },
};

interface PgBackground {
  timed: number;
  requested: number;
  /** Client backends' writes of relation pages: from shared buffers (context normal), from their bulk-write rings. */
  backendShared: number;
  backendRing: number;
  checkpointerWrites: number;
  bgwriterWrites: number;
}

/** PostgreSQL's background work so far (PostgreSQL 17's views); null where they are missing or not readable. */
async function pgBackground(pool: pg.Pool): Promise<PgBackground | null> {
  const r = await pool
    .query<PgBackground>(
      `select (select num_timed::int from pg_stat_checkpointer) as "timed",
              (select num_requested::int from pg_stat_checkpointer) as "requested",
              (select coalesce(sum(writes), 0)::int from pg_stat_io where backend_type = 'client backend' and object = 'relation' and context = 'normal') as "backendShared",
              (select coalesce(sum(writes), 0)::int from pg_stat_io where backend_type = 'client backend' and object = 'relation' and context = 'bulkwrite') as "backendRing",
              (select coalesce(sum(writes), 0)::int from pg_stat_io where backend_type = 'checkpointer') as "checkpointerWrites",
              (select coalesce(sum(writes), 0)::int from pg_stat_io where backend_type = 'background writer') as "bgwriterWrites"`,
    )
    .catch(() => null);
  return r?.rows[0] ?? null;
}

/** The pid of the process listening on a local TCP port (Linux `ss`): the platform's worker, by its health port. */
function listenerPid(port: number): number {
  const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
  const m = /pid=(\d+)/.exec(out);
  if (!m) throw new Error(`no process found listening on port ${port}`);
  return Number(m[1]);
}

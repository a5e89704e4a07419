import { Worker } from 'bullmq';
import { uuidv7 } from '@platform/db';
import { bullJobId, bullJobOptions, bulkWriteJob, createRedis, type Envelope } from '@platform/jobs';
import type { TeamClient } from '../lib/api';
import { BENCH_FIELDS, insertOps } from '../lib/rows';
import { markQueueEvents } from '../lib/queue-events';
import { mapLimit } from '../lib/stats';
import type { BenchModule } from '../lib/types';

const JOBS = 1_000;
const OPERATIONS = 10;
/**
 * Small jobs come from many teams and tables. Jobs on one table run one at a time, and a claim
 * refused for that is retried only after WORKER_BLOCKED_RETRY_MS (500 ms): with a backlog, one slow
 * job is enough to put its table into a convoy of refused claims (see the same-table-jobs bench).
 * So the jobs go round-robin over TEAMS × TABLES_PER_TEAM tables, and a table's next job comes
 * about 200 jobs later: this measures the per-job cost, not the table serialisation.
 */
const TEAMS = 20;
const TABLES_PER_TEAM = 10;
const ENQUEUE_CONCURRENCY = 8;

/**
 * Worker throughput on small jobs: 1,000 bulk writes of 10 inserts each are accepted by the API
 * while the queue is paused, then the queue is resumed and the time until the history shows them
 * all ended is taken (real worker process, default concurrency). Baseline: a BullMQ worker with a
 * no-op processor at the same concurrency, in this process, draining 1,000 jobs of the same
 * envelope and options on the same Redis.
 */
export const smallJobs: BenchModule = {
  name: 'small-jobs',
  description: `drain ${JOBS.toLocaleString('en-US')} bulk writes of ${OPERATIONS} inserts, jobs/s, vs a raw BullMQ no-op worker`,
  async run(ctx) {
    const targets: { team: TeamClient; tableId: string }[] = [];
    for (let t = 0; t < TEAMS; t++) {
      const team = await ctx.newTeam(`bench: small jobs ${t}`);
      const project = await team.createProject('small jobs');
      for (let k = 0; k < TABLES_PER_TEAM; k++) {
        targets.push({ team, tableId: (await team.createTable(project.id, `posts ${k}`, BENCH_FIELDS)).id });
      }
    }
    // Round-robin over teams first, then their tables.
    const order = Array.from({ length: targets.length }, (_, i) => targets[(i % TEAMS) * TABLES_PER_TEAM + Math.floor(i / TEAMS)]!);
    const bodies = Array.from({ length: JOBS }, (_, i) => JSON.stringify({ operations: insertOps(`s${i}`, OPERATIONS, i * OPERATIONS) }));

    // --- the platform --------------------------------------------------------------------------
    const queue = ctx.platformQueue(bulkWriteJob.queue);
    await queue.pause();
    let ids: string[];
    const enqueueStarted = performance.now();
    try {
      ids = await mapLimit(bodies, ENQUEUE_CONCURRENCY, async (body, i) => {
        const target = order[i % order.length]!;
        return (await target.team.bulkWrite(target.tableId, body)).id;
      });
    } catch (err) {
      await queue.resume();
      throw err;
    }
    const enqueueS = (performance.now() - enqueueStarted) / 1000;
    const events = await markQueueEvents(ctx.redis, queue);
    const resumed = performance.now();
    await queue.resume();
    const ended = await ctx.waitJobsEnded(ids, { timeoutMs: 240_000, intervalMs: 50 });
    const platformS = (ended.at - resumed) / 1000;
    // Claims refused because an earlier job held the table show as 'delayed' events (moveToDelayed).
    const delayedEvents = (await events()).delayed ?? 0;
    const completed = ended.statuses.completed ?? 0;
    if (completed !== JOBS) throw new Error(`${JOBS - completed} of ${JOBS} jobs did not complete: ${JSON.stringify(ended.statuses)}`);
    const retried = (
      await ctx.pg.query<{ attempts: number; run_ms: number; run_p99_ms: number; wait_ms: number }>(
        `select coalesce(sum(attempts), 0)::int as attempts,
                (percentile_cont(0.5) within group (order by extract(epoch from finished_at - started_at)))::float8 * 1000 as run_ms,
                (percentile_cont(0.99) within group (order by extract(epoch from finished_at - started_at)))::float8 * 1000 as run_p99_ms,
                avg(extract(epoch from started_at - created_at))::float8 * 1000 as wait_ms
         from jobs where id = any($1::uuid[])`,
        [ids],
      )
    ).rows[0]!;

    // --- raw BullMQ, no-op processor -----------------------------------------------------------
    const raw = ctx.rawQueue('bench-noop');
    const options = bullJobOptions(bulkWriteJob);
    const jobs = Array.from({ length: JOBS }, (_, i) => {
      const id = uuidv7();
      const target = order[i % order.length]!;
      const data: Envelope = {
        jobId: id,
        teamId: target.team.teamId,
        type: bulkWriteJob.name,
        version: bulkWriteJob.version,
        payload: { tableId: target.tableId, blobKey: `bulk/${id}.ndjson`, operationCount: OPERATIONS },
      };
      return { name: bulkWriteJob.name, data, opts: { ...options, jobId: bullJobId(id, 0) } };
    });
    for (let i = 0; i < jobs.length; i += 100) await raw.addBulk(jobs.slice(i, i + 100));
    const connection = createRedis(ctx.redisUrl, 'worker');
    connection.on('error', () => {});
    let done = 0;
    let finish: () => void = () => {};
    const allDone = new Promise<void>((resolve) => (finish = resolve));
    const worker = new Worker(raw.name, async () => undefined, {
      connection,
      prefix: ctx.rawPrefix,
      concurrency: ctx.worker.concurrency,
      autorun: false,
    });
    worker.on('completed', () => {
      if (++done === JOBS) finish();
    });
    let baselineS: number;
    try {
      await worker.waitUntilReady();
      const t0 = performance.now();
      void worker.run();
      await Promise.race([
        allDone,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`raw worker drained ${done} of ${JOBS} in 120 s`)), 120_000).unref()),
      ]);
      baselineS = (performance.now() - t0) / 1000;
    } finally {
      await worker.close();
      connection.disconnect();
    }

    return [
      {
        bench: 'small-jobs drain',
        platform: { value: JOBS / platformS, unit: 'jobs/s' },
        baseline: { value: JOBS / baselineS, unit: 'jobs/s' },
        better: 'higher',
        note:
          `${JOBS} jobs × ${OPERATIONS} inserts over ${targets.length} tables of ${TEAMS} teams: ${platformS.toFixed(1)} s vs ${baselineS.toFixed(2)} s; ` +
          `worker concurrency ${ctx.worker.concurrency}, run p50 ${retried.run_ms.toFixed(0)} ms p99 ${retried.run_p99_ms.toFixed(0)} ms, ${delayedEvents} claims delayed, ${retried.attempts} retried runs; ` +
          `API accepted them at ${(JOBS / enqueueS).toFixed(0)} req/s (${ENQUEUE_CONCURRENCY} in flight)`,
      },
    ];
  },
};

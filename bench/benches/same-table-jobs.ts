import { bulkWriteJob } from '@platform/jobs';
import type { TeamClient } from '../lib/api';
import { markQueueEvents } from '../lib/queue-events';
import { BENCH_FIELDS, insertOps } from '../lib/rows';
import type { BenchContext, BenchModule } from '../lib/types';

const JOBS = 24;
const OPERATIONS = 10;

/**
 * Jobs that write the same CMS table run one at a time, in the order accepted (API.md). This
 * measures what that costs with a backlog: JOBS small bulk writes on ONE table, drained after the
 * queue is resumed, against the same jobs spread over JOBS tables (also through the platform, so
 * the ratio is the price of the serialisation alone). A claim refused because an earlier job holds
 * the table is put back for WORKER_BLOCKED_RETRY_MS; the note counts those refusals.
 */
export const sameTableJobs: BenchModule = {
  name: 'same-table-jobs',
  description: `drain ${JOBS} bulk writes of ${OPERATIONS} inserts on one table, vs the same jobs spread over ${JOBS} tables`,
  async run(ctx) {
    const team = await ctx.newTeam('bench: same-table jobs');
    const project = await team.createProject('same-table jobs');
    const one = await team.createTable(project.id, 'one table', BENCH_FIELDS);
    const spread: string[] = [];
    for (let i = 0; i < JOBS; i++) spread.push((await team.createTable(project.id, `spread ${i}`, BENCH_FIELDS)).id);

    const spreadRun = await drain(ctx, team, (i) => spread[i]!, 'x');
    const oneRun = await drain(ctx, team, () => one.id, 'y');
    return [
      {
        bench: 'same-table-jobs drain',
        platform: { value: JOBS / oneRun.seconds, unit: 'jobs/s' },
        baseline: { value: JOBS / spreadRun.seconds, unit: 'jobs/s' },
        better: 'higher',
        note:
          `${JOBS} jobs × ${OPERATIONS} inserts on 1 table: ${oneRun.seconds.toFixed(1)} s, ${oneRun.delayed} claims refused and delayed; ` +
          `baseline: same jobs on ${JOBS} tables: ${spreadRun.seconds.toFixed(2)} s, ${spreadRun.delayed} refused; ` +
          (oneRun.outOfOrder === 0 ? 'order of acceptance kept' : `${oneRun.outOfOrder} job(s) started out of acceptance order`),
      },
    ];
  },
};

async function drain(ctx: BenchContext, team: TeamClient, table: (i: number) => string, tag: string) {
  const queue = ctx.platformQueue(bulkWriteJob.queue);
  await queue.pause();
  const ids: string[] = [];
  try {
    // One at a time, so the queue holds them in the order they were accepted.
    for (let i = 0; i < JOBS; i++) ids.push((await team.bulkWrite(table(i), { operations: insertOps(`${tag}${i}`, OPERATIONS) })).id);
  } catch (err) {
    await queue.resume();
    throw err;
  }
  const events = await markQueueEvents(ctx.redis, queue);
  const resumed = performance.now();
  await queue.resume();
  const ended = await ctx.waitJobsEnded(ids, { timeoutMs: 120_000, intervalMs: 50 });
  if ((ended.statuses.completed ?? 0) !== JOBS) throw new Error(`jobs did not all complete: ${JSON.stringify(ended.statuses)}`);
  const order = await ctx.pg.query<{ n: number }>(
    `select count(*)::int as n from (
       select started_at, lag(started_at) over (order by seq) as prev from jobs where id = any($1::uuid[])
     ) s where started_at < prev`,
    [ids],
  );
  return { seconds: (ended.at - resumed) / 1000, delayed: (await events()).delayed ?? 0, outOfOrder: order.rows[0]!.n };
}

import { uuidv7 } from '@platform/db';
import { bullJobId, bullJobOptions, bulkWriteJob, type Envelope } from '@platform/jobs';
import { BENCH_FIELDS, insertOps } from '../lib/rows';
import { mean, percentile } from '../lib/stats';
import type { BenchModule } from '../lib/types';

const REQUESTS = 300;
const WARMUP = 30;
const OPERATIONS = 100;
/** Measured in alternating rounds (API, then raw), so drift on a noisy machine hits both alike. */
const ROUNDS = 10;
/** Requests go round-robin over tables: jobs on one table run one at a time, and the backlog
 * built here is drained after the measurement. */
const TABLES = 20;

/**
 * How long the studio waits for its 202: `POST /v1/cms-tables/:id/bulk-writes` with 100 inserts,
 * one request at a time over HTTP (keep-alive) to the real API process. Baseline: raw BullMQ
 * `queue.add` of the same kind of envelope with the same job options on the same Redis, from
 * this process.
 *
 * The worker process keeps running, but the platform's bulk-write queue is paused while the
 * latencies are measured (BullMQ `queue.pause()`), so the jobs are not executed on the same two
 * cores meanwhile; the raw queue is paused too, so both adds land in a paused queue. The backlog
 * is drained afterwards, and how long that took is reported.
 */
export const enqueueLatency: BenchModule = {
  name: 'enqueue-latency',
  description: `POST bulk-writes (${OPERATIONS} inserts, 202) over HTTP, p50/p99 of ${REQUESTS}, vs raw BullMQ queue.add`,
  async run(ctx) {
    const team = await ctx.newTeam('bench: enqueue latency');
    const project = await team.createProject('enqueue latency');
    const tables: string[] = [];
    for (let t = 0; t < TABLES; t++) tables.push((await team.createTable(project.id, `posts ${t}`, BENCH_FIELDS)).id);
    const total = WARMUP + REQUESTS;
    const bodies = Array.from({ length: total }, (_, i) => JSON.stringify({ operations: insertOps(`e${i}`, OPERATIONS, i * OPERATIONS) }));
    const bodyBytes = Buffer.byteLength(bodies[0]!);

    const queue = ctx.platformQueue(bulkWriteJob.queue);
    const raw = ctx.rawQueue(bulkWriteJob.queue);
    const options = bullJobOptions(bulkWriteJob);
    const jobIds: string[] = [];
    let sent = 0;
    const viaApi = async (): Promise<number> => {
      const i = sent++;
      const started = performance.now();
      const job = await team.bulkWrite(tables[i % TABLES]!, bodies[i]!);
      const ms = performance.now() - started;
      jobIds.push(job.id);
      return ms;
    };
    let added = 0;
    const viaBullmq = async (): Promise<number> => {
      const i = added++;
      const id = uuidv7();
      const envelope: Envelope = {
        jobId: id,
        teamId: team.teamId,
        type: bulkWriteJob.name,
        version: bulkWriteJob.version,
        payload: { tableId: tables[i % TABLES], blobKey: `bulk/${id}.ndjson`, operationCount: OPERATIONS },
      };
      const started = performance.now();
      await raw.add(bulkWriteJob.name, envelope, { ...options, jobId: bullJobId(id, 0) });
      return performance.now() - started;
    };

    const apiMs: number[] = [];
    const rawMs: number[] = [];
    await queue.pause();
    await raw.pause();
    try {
      for (let i = 0; i < WARMUP; i++) {
        await viaApi();
        await viaBullmq();
      }
      const perRound = REQUESTS / ROUNDS;
      for (let r = 0; r < ROUNDS; r++) {
        for (let k = 0; k < perRound; k++) apiMs.push(await viaApi());
        for (let k = 0; k < perRound; k++) rawMs.push(await viaBullmq());
      }
    } finally {
      await queue.resume();
    }
    const resumed = performance.now();
    const drained = await ctx.waitJobsEnded(jobIds, { timeoutMs: 240_000, intervalMs: 100 });
    const drainS = (drained.at - resumed) / 1000;
    const failed = jobIds.length - (drained.statuses.completed ?? 0);
    if (failed > 0) throw new Error(`${failed} of the ${jobIds.length} enqueued jobs did not complete: ${JSON.stringify(drained.statuses)}`);

    const common = `${REQUESTS} sequential requests after ${WARMUP} warm-up, body ${(bodyBytes / 1024).toFixed(0)} KiB`;
    return [
      {
        bench: 'enqueue-latency p50',
        platform: { value: percentile(apiMs, 50), unit: 'ms' },
        baseline: { value: percentile(rawMs, 50), unit: 'ms' },
        better: 'lower',
        note: `${common}; queue paused while measuring, worker running`,
      },
      {
        bench: 'enqueue-latency p99',
        platform: { value: percentile(apiMs, 99), unit: 'ms' },
        baseline: { value: percentile(rawMs, 99), unit: 'ms' },
        better: 'lower',
        note: `mean ${mean(apiMs).toFixed(2)} vs ${mean(rawMs).toFixed(2)} ms, max ${Math.max(...apiMs).toFixed(1)} vs ${Math.max(...rawMs).toFixed(1)} ms; backlog of ${jobIds.length} jobs (${TABLES} tables) drained in ${drainS.toFixed(1)} s after resume`,
      },
    ];
  },
};

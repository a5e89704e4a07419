import {
  countEndedJobsByQueue,
  downsampleQueueSamples,
  dropOrphanClaimTables,
  purgeAuditLog,
  purgeJobHistory,
  purgeQueueSamples,
  recordQueueSamples,
  type Db,
} from '@platform/db';
import type { Queue } from 'bullmq';
import type { FastifyBaseLogger } from 'fastify';

/**
 * The dashboard process's background work: the queue sampler (every 10 s by default) and the
 * retention pass (every 10 minutes by default: downsample old samples, then purge the job
 * history, the audit log and the samples past their retention). It runs in the dashboard, not the
 * worker, because the dashboard is the only reader of what it keeps, and a worker's time and
 * connection budget are for jobs.
 *
 * Several dashboard processes may run it side by side: samples are aligned to the interval and
 * keyed by (queue, step, at), so the second writer of an interval writes nothing; purges delete in
 * batches with `for update skip locked`.
 */

export interface MaintenanceOptions {
  /** 0 turns the sampler off. */
  sampleIntervalMs: number;
  /** 0 turns the retention pass off. */
  purgeIntervalMs: number;
  historyRetentionDays: number;
  auditRetentionDays: number;
  /** Raw samples are kept this long, then averaged into 5-minute rows. */
  samplesRawHours: number;
  samplesRetentionDays: number;
}

export const DEFAULT_MAINTENANCE: MaintenanceOptions = {
  sampleIntervalMs: 10_000,
  purgeIntervalMs: 10 * 60_000,
  historyRetentionDays: 90,
  auditRetentionDays: 365,
  samplesRawHours: 24,
  samplesRetentionDays: 30,
};

export const DOWNSAMPLED_STEP_S = 300;
/**
 * Rows deleted per statement, and statements per pass: a pass stays short whatever the backlog.
 * Jobs go in smaller batches: each takes its chunk rows (hundreds for a big job) along by cascade.
 */
const PURGE_BATCH = 5_000;
const JOB_PURGE_BATCH = 1_000;
const PURGE_MAX_BATCHES = 50;
/** A sample waits this long past its interval's end, so jobs that ended just before it have committed. */
const SAMPLE_SLACK_MS = 2_000;
const DAY_MS = 24 * 3600 * 1000;

const COUNTED = ['waiting', 'prioritized', 'waiting-children', 'active', 'delayed', 'failed'] as const;

export interface PurgeReport {
  downsampled: number;
  samples: number;
  audit: number;
  jobs: number;
  /** Claims tables of imports whose job was purged (kept for a retry until then). */
  claimTables: number;
}

export class Maintenance {
  private sampleTimer: NodeJS.Timeout | undefined;
  private purgeTimer: NodeJS.Timeout | undefined;
  private running = new Set<Promise<unknown>>();
  private stopped = false;
  readonly stepS: number;

  constructor(
    private readonly db: Db,
    private readonly queues: Queue[],
    private readonly log: FastifyBaseLogger,
    readonly opts: MaintenanceOptions,
  ) {
    this.stepS = Math.max(1, Math.round(opts.sampleIntervalMs / 1000) || 10);
  }

  start(): void {
    if (this.opts.sampleIntervalMs > 0) this.scheduleSample();
    if (this.opts.purgeIntervalMs > 0) {
      // The first pass soon after start (not at once: start-up is busy enough), then on the interval.
      this.purgeTimer = setTimeout(() => this.purgeLoop(), Math.min(30_000, this.opts.purgeIntervalMs));
      this.purgeTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sampleTimer);
    clearTimeout(this.purgeTimer);
    await Promise.allSettled([...this.running]);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p);
    void p.finally(() => this.running.delete(p)).catch(() => {});
    return p;
  }

  private scheduleSample(): void {
    if (this.stopped) return;
    const stepMs = this.stepS * 1000;
    const now = Date.now();
    const delay = Math.floor(now / stepMs) * stepMs + stepMs + SAMPLE_SLACK_MS - now;
    this.sampleTimer = setTimeout(() => {
      void this.track(this.sampleOnce())
        .catch((err: unknown) => this.log.warn({ err }, 'queue sample failed'))
        .finally(() => this.scheduleSample());
    }, delay);
    this.sampleTimer.unref();
  }

  private purgeLoop(): void {
    if (this.stopped) return;
    void this.track(this.purgeOnce())
      .then((r) => {
        if (r.jobs || r.audit || r.samples || r.downsampled) this.log.info(r, 'retention pass');
      })
      .catch((err: unknown) => this.log.warn({ err }, 'retention pass failed'))
      .finally(() => {
        if (this.stopped) return;
        this.purgeTimer = setTimeout(() => this.purgeLoop(), this.opts.purgeIntervalMs);
        this.purgeTimer.unref();
      });
  }

  /**
   * One sample per queue for the interval ending at the last step boundary before `now`: the
   * BullMQ counts now, and the history's completed and failed jobs of that interval.
   */
  async sampleOnce(now = new Date()): Promise<number> {
    const stepMs = this.stepS * 1000;
    const at = new Date(Math.floor(now.getTime() / stepMs) * stepMs);
    const [counts, ended] = await Promise.all([
      Promise.all(this.queues.map((q) => q.getJobCounts(...COUNTED))),
      countEndedJobsByQueue(this.db, new Date(at.getTime() - stepMs), at),
    ]);
    const rows = this.queues.map((q, i) => {
      const c = counts[i]!;
      const n = (k: (typeof COUNTED)[number]) => c[k] ?? 0;
      return {
        queue: q.name,
        stepS: this.stepS,
        at,
        waiting: n('waiting') + n('prioritized') + n('waiting-children'),
        active: n('active'),
        delayed: n('delayed'),
        failed: n('failed'),
        completedCount: ended.get(q.name)?.completed ?? 0,
        failedCount: ended.get(q.name)?.failed ?? 0,
      };
    });
    return recordQueueSamples(this.db, rows);
  }

  async purgeOnce(now = new Date()): Promise<PurgeReport> {
    const o = this.opts;
    const stepMs = DOWNSAMPLED_STEP_S * 1000;
    const rawCutoff = new Date(Math.floor((now.getTime() - o.samplesRawHours * 3600 * 1000) / stepMs) * stepMs);
    const downsampled = await downsampleQueueSamples(this.db, rawCutoff, { toStepS: DOWNSAMPLED_STEP_S });
    const samples = await purgeQueueSamples(this.db, new Date(now.getTime() - o.samplesRetentionDays * DAY_MS));
    const audit = await this.batches(PURGE_BATCH, (n) => purgeAuditLog(this.db, new Date(now.getTime() - o.auditRetentionDays * DAY_MS), n));
    const jobs = await this.batches(JOB_PURGE_BATCH, (n) => purgeJobHistory(this.db, new Date(now.getTime() - o.historyRetentionDays * DAY_MS), n));
    const claimTables = this.stopped ? 0 : await dropOrphanClaimTables(this.db);
    return { downsampled, samples, audit, jobs, claimTables };
  }

  private async batches(size: number, step: (batch: number) => Promise<number>): Promise<number> {
    let total = 0;
    for (let i = 0; i < PURGE_MAX_BATCHES && !this.stopped; i++) {
      const n = await step(size);
      total += n;
      if (n < size) break;
    }
    return total;
  }
}

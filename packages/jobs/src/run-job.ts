import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import {
  claimJob,
  finishJob,
  isTransientDbError,
  nextDispatch,
  recordRetryableFailure,
  waitersOf,
  type Database,
  type JobErrorInfo,
  type JobRow,
} from '@platform/db';
import type { BlobStore } from './blob-store';
import { jobDefinition } from './catalog';
import { JobRun, type ChunkRunnerOptions } from './chunk-runner';
import type { ChunkSizer } from './chunk-sizer';
import { envelopeSchema } from './define-job';
import { bullJobId } from './queues';
import { FencedError, JobInputError, StopRun, type StopReason } from './errors';
import type { Logger, Processor } from './processor';
import type { Producer } from './producer';

export interface RunnerDeps {
  database: Database;
  /** Read replica for exports (`DATABASE_REPLICA_URL`); reads go to `database` without it. */
  replicaDatabase?: Database;
  blobs: BlobStore;
  producer: Producer;
  log: Logger;
  /** Identifies this worker process in the history row (`lease_owner`). */
  owner: string;
  chunk: ChunkRunnerOptions;
  chunkSize: number;
  /** How long a job waits before asking again when an earlier job holds its table. */
  blockedRetryMs: number;
  processors: Record<string, Processor>;
  /** Overrides the job types' maximum run time (ms), e.g. from configuration. */
  maxRunTimeMs?: Partial<Record<string, number>>;
  /** A running job may hold at most this many of a team's jobs running at once (0: no cap). */
  teamMaxRunning?: number;
}

/** What one run gets from the process that runs it: fairness yields and chunk sizing. */
export interface RunHooks {
  /** Asked at every chunk boundary, after the process-wide checks. */
  shouldStop?: () => StopReason | null;
  sizer?: ChunkSizer;
  pace?: () => Promise<void>;
}

export type RunOutcome =
  | { outcome: 'completed'; result: unknown }
  | { outcome: 'cancelled' | 'handed_back' | 'skipped' | 'fenced'; reason?: string };

function errorInfo(err: unknown): JobErrorInfo {
  if (err instanceof JobInputError) {
    return {
      code: err.code,
      message: err.message,
      details: err.details,
      ...(err.invalidCount !== undefined ? { invalidCount: err.invalidCount } : {}),
    };
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    code: isTransientDbError(e) ? 'dependency_unavailable' : 'internal',
    message: e.message,
    stack: e.stack,
  };
}

/**
 * Runs one BullMQ delivery of a job: claims the history row (a new lease), runs the processor on
 * the chunk runner, and records how the run ended. BullMQ delivers at least once; the lease and
 * chunk guards make the effect exactly once.
 */
export async function runBullJob(
  job: Job,
  token: string | undefined,
  deps: RunnerDeps,
  hooks: RunHooks = {},
): Promise<RunOutcome> {
  const env = envelopeSchema.safeParse(job.data);
  if (!env.success) throw new UnrecoverableError(`malformed job envelope: ${env.error.message}`);
  const { jobId, type } = env.data;
  const def = jobDefinition(type);
  const processor = deps.processors[type];
  if (!def || !processor) throw new UnrecoverableError(`no processor for job type ${type}`);

  if (deps.chunk.shouldStop?.() === 'shutdown') {
    // Shutting down before the run started: give the delivery back untouched for another worker.
    await job.moveToDelayed(Date.now(), token);
    throw new DelayedError();
  }
  const claim = await claimJob(deps.database.db, jobId, deps.owner, { teamMaxRunning: deps.teamMaxRunning });
  if (claim.kind === 'missing' || claim.kind === 'ended') {
    return { outcome: 'skipped', reason: claim.kind === 'ended' ? claim.job.status : 'missing' };
  }
  if (claim.kind === 'blocked') {
    // Not an attempt: wait for the earlier job on the same table (or a free place under the
    // team's running cap), then ask again.
    await job.moveToDelayed(Date.now() + deps.blockedRetryMs, token);
    throw new DelayedError();
  }
  const row = claim.job;
  const log = deps.log;
  const maxRunTimeMs = deps.maxRunTimeMs?.[type] ?? def.defaults.maxRunTimeMs;
  const startedAt = row.startedAt?.getTime() ?? Date.now();
  const run = new JobRun(deps.database, row, {
    ...deps.chunk,
    sizer: hooks.sizer,
    pace: hooks.pace,
    shouldStop: () =>
      deps.chunk.shouldStop?.() ?? (Date.now() - startedAt > maxRunTimeMs ? 'timeout' : null) ?? hooks.shouldStop?.() ?? null,
  });
  const end = async (e: Parameters<typeof finishJob>[3]) => {
    const ended = await finishJob(deps.database.db, row.id, row.lease, e);
    if (ended) {
      void wakeWaiters(deps, row);
      // An upload has served its purpose once its job completed. A failed or cancelled job keeps
      // it, since the contract lets either be retried from its last chunk; the blob janitor
      // removes it after the retention period.
      const input = (row.payload as { blobKey?: unknown }).blobKey;
      if (e.status === 'completed' && type !== 'cms.export' && typeof input === 'string') {
        await deps.blobs.delete(input).catch(() => {});
      }
    }
    return ended;
  };

  try {
    const parsed = def.payload.safeParse(row.payload);
    if (!parsed.success) throw new JobInputError(`payload does not fit ${type} v${def.version}: ${parsed.error.message}`);
    run.boundary(row.cancelRequestedAt !== null);
    const result = await processor({
      run,
      payload: parsed.data,
      jobId: row.id,
      teamId: row.teamId,
      database: deps.database,
      replicaDatabase: deps.replicaDatabase,
      blobs: deps.blobs,
      log,
      get chunkSize() {
        return hooks.sizer?.size ?? deps.chunkSize;
      },
    });
    const ended = await end({ status: 'completed', result });
    if (!ended) return { outcome: 'fenced' };
    log.info({ jobId, type, chunks: run.chunkSeq, longestChunkMs: Math.round(run.longestChunkMs) }, 'job completed');
    return { outcome: 'completed', result };
  } catch (err) {
    return await onRunError(err, job, row, run, deps, end);
  }
}

async function onRunError(
  err: unknown,
  job: Job,
  row: JobRow,
  run: JobRun,
  deps: RunnerDeps,
  end: (e: Parameters<typeof finishJob>[3]) => ReturnType<typeof finishJob>,
): Promise<RunOutcome> {
  const log = deps.log;
  if (err instanceof FencedError) {
    log.warn({ jobId: row.id, lease: row.lease }, 'stale run fenced out: committed nothing');
    return { outcome: 'fenced' };
  }
  if (err instanceof StopRun) {
    if (err.reason === 'cancelled') {
      await end({ status: 'cancelled' });
      return { outcome: 'cancelled' };
    }
    if (err.reason === 'timeout') {
      const info: JobErrorInfo = { code: 'timeout', message: 'the job ran past its maximum run time' };
      await end({ status: 'failed', error: info });
      throw new UnrecoverableError(info.message);
    }
    // Shutdown or a fairness yield: a new BullMQ job continues from the checkpoint.
    const dispatch = await nextDispatch(deps.database.db, row.id, { lease: row.lease });
    if (dispatch === undefined) return { outcome: 'fenced' };
    await deps.producer.dispatch({ ...row, dispatches: dispatch });
    void wakeWaiters(deps, row);
    log.info({ jobId: row.id, reason: err.reason, chunk: run.chunkSeq }, 'run handed back at a chunk boundary');
    return { outcome: 'handed_back', reason: err.reason };
  }
  const info = errorInfo(err);
  if (err instanceof JobInputError) {
    await end({ status: 'failed', error: info });
    throw new UnrecoverableError(info.message);
  }
  const attempts = job.opts.attempts ?? 1;
  const final = job.attemptsMade + 1 >= attempts;
  log.warn({ jobId: row.id, err: info.message, attempt: job.attemptsMade + 1, of: attempts }, 'run failed');
  if (final) {
    await end({ status: 'failed', error: info }).catch(() => {});
  } else {
    await recordRetryableFailure(deps.database.db, row.id, row.lease, info).catch(() => {});
  }
  throw err;
}

/**
 * Jobs refused at their claim (an earlier job held their table, or their team was at its running
 * cap) wait as delayed BullMQ jobs. When a run ends, the likely next ones are promoted at once,
 * so a backlog on one table drains at the speed of its jobs, not of the retry delay.
 */
async function wakeWaiters(deps: RunnerDeps, row: JobRow): Promise<void> {
  try {
    for (const w of await waitersOf(deps.database.db, row)) {
      const job = await deps.producer.queue(w.queue).getJob(bullJobId(w.id, w.dispatches));
      if (job && (await job.isDelayed())) await job.promote().catch(() => {});
    }
  } catch (err) {
    deps.log.warn({ err: String(err), jobId: row.id }, 'could not wake the jobs waiting on this one');
  }
}

import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import {
  claimJob,
  finishJob,
  isConnectionError,
  isTransientDbError,
  nextDispatch,
  sqlState,
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
import { CheckpointLostError, FencedError, JobInputError, StopRun, type StopReason } from './errors';
import type { Logger, Processor } from './processor';
import type { DispatchRow, Producer } from './producer';

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
  /** Rows per page of a read-only pass (exports), which no transaction bounds. */
  exportPageRows?: number;
  /** How long an export reads pages before it checkpoints them (default 500 ms). */
  exportChunkMs?: number;
  /** Id ranges an export is cut into, read side by side while the run is alone in its process (default 2). */
  exportReaders?: number;
  /** How long a job waits before asking again when an earlier job holds its table. */
  blockedRetryMs: number;
  /**
   * How long a delivery waits out an unreachable database without using its attempts (default
   * 10 min); past it, failures count as usual.
   */
  dbOutageGraceMs?: number;
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
  /** Whether this is the only run of its process now (default: yes). */
  alone?: () => boolean;
  /** Write chunks in parts that may be cut short (`Chunk.parts`)? Default: yes. */
  split?: () => boolean;
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
  let claim: Awaited<ReturnType<typeof claimJob>>;
  try {
    claim = await claimJob(deps.database.db, jobId, deps.owner, { teamMaxRunning: deps.teamMaxRunning });
  } catch (err) {
    if (isConnectionError(err)) await waitOutOutage(job, token, deps, err, false);
    throw err;
  }
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
    // Commits that do not wait for their WAL flush. Alone, a run's WAL flushes were a tenth of a
    // 1M-row import's time (write pass 24.4 s with them, 19.3–20.1 s without). Beside other runs,
    // timed through the COMMIT (bench worker-connections), the median chunk took 86–89 ms and its
    // p99 191–205 ms, against 90 and 232–248 ms with synchronous commits, whose WAL flushes queue
    // behind one another (LWLock:WALWrite). (Timed to just before the COMMIT, as the timeline once
    // was, synchronous commits had looked the better beside other runs.)
    asyncCommit: () => true,
    // Whether chunks may be cut short after a part (the runner's default: yes).
    split: hooks.split,
    shouldStop: () =>
      deps.chunk.shouldStop?.() ?? (Date.now() - startedAt > maxRunTimeMs ? 'timeout' : null) ?? hooks.shouldStop?.() ?? null,
  });
  const end = async (e: Parameters<typeof finishJob>[3], chunkSeq?: number) => {
    // Before the job ends: whoever reads a finished job's timeline finds every chunk's whole time.
    await run.settleTimeline();
    const ended = await finishJob(deps.database.db, row.id, row.lease, e, chunkSeq);
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
      pageRows: deps.exportPageRows ?? deps.chunkSize,
      pageChunkMs: deps.exportChunkMs ?? 500,
      pageReaders: deps.exportReaders ?? 2,
      restartChunkSizing: () => hooks.sizer?.reset(),
      alone: () => hooks.alone?.() ?? true,
    });
    // Completed only if the row holds every chunk this run committed: after a PostgreSQL crash
    // that lost asynchronous commits, a new run redoes them instead (CheckpointLostError).
    const ended = await end({ status: 'completed', result }, run.chunkSeq);
    if (!ended) {
      await run.throwIfCheckpointLost();
      return { outcome: 'fenced' };
    }
    log.info({ jobId, type, chunks: run.chunkSeq, longestChunkMs: Math.round(run.longestChunkMs) }, 'job completed');
    return { outcome: 'completed', result };
  } catch (err) {
    return await onRunError(err, job, token, row, run, deps, end);
  }
}

/**
 * BullMQ counts every stall of a delivery (its worker died or froze) toward `maxStalledCount` and
 * fails the job past it: that is how a crash loop ends. But a stall after which the job had moved
 * on (the run that stalled committed a chunk), or of a delivery that never ran the job (it waited
 * for a slot in the process that died), says nothing against this job: a 200,000-row import whose
 * worker was SIGKILLed four times failed as "stalled" although every run made progress (fault
 * suite, test/faults/crashes.test.ts). Such a delivery is handed back as a fresh one, whose stall
 * count starts at zero. Bounded: each reset follows a committed chunk or a run that never started.
 * The worker asks before the delivery waits for a slot: a delivery that waits behind a crashing
 * job in its process is a bystander every time it is fetched again.
 */
export async function forgiveBlamelessStall(job: Job, deps: RunnerDeps): Promise<RunOutcome | undefined> {
  if (job.stalledCounter === 0) return undefined;
  const jobId = envelopeSchema.safeParse(job.data).data?.jobId;
  if (!jobId) return undefined;
  type Row = Omit<DispatchRow, 'dispatches'> & { lease: number; progressed: boolean; idle: boolean };
  let rows: Row[];
  try {
    rows = (
      await deps.database.pool.query<Row>(
        `select j.id, j.team_id as "teamId", j.type, j.queue, j.seq, j.payload, j.lease,
                j.lease_owner is null as idle,
                exists (select 1 from job_chunks c where c.job_id = j.id and c.lease = j.lease) as progressed
         from jobs j where j.id = $1 and j.status in ('queued', 'active')`,
        [jobId],
      )
    ).rows;
  } catch (err) {
    // The database cannot say (an outage): the delivery runs on, and its claim meets the outage,
    // which waits it out without using an attempt. Anything past this read fails the delivery.
    if (isConnectionError(err)) return undefined;
    throw err;
  }
  const row = rows[0];
  if (!row || !(row.progressed || row.idle)) return undefined;
  if (!(await handBack(deps, row))) return undefined;
  deps.log.info(
    { jobId, stalls: job.stalledCounter, why: row.progressed ? 'the stalled run committed chunks' : 'the stalled delivery never ran' },
    'stalled delivery handed back without counting the stall',
  );
  return { outcome: 'handed_back', reason: 'stall_without_blame' };
}

async function onRunError(
  err: unknown,
  job: Job,
  token: string | undefined,
  row: JobRow,
  run: JobRun,
  deps: RunnerDeps,
  end: (e: Parameters<typeof finishJob>[3]) => ReturnType<typeof finishJob>,
): Promise<RunOutcome> {
  const log = deps.log;
  // Before the job is ended or handed on (not while the database is away: it would wait for it).
  if (!isConnectionError(err)) await run.settleTimeline();
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
    if (!(await handBack(deps, row))) return { outcome: 'fenced' };
    void wakeWaiters(deps, row);
    log.info({ jobId: row.id, reason: err.reason, chunk: run.chunkSeq }, 'run handed back at a chunk boundary');
    return { outcome: 'handed_back', reason: err.reason };
  }
  const info = errorInfo(err);
  if (err instanceof JobInputError) {
    await end({ status: 'failed', error: info });
    throw new UnrecoverableError(info.message);
  }
  if (err instanceof CheckpointLostError) {
    // PostgreSQL lost this run's last chunks (a crash before their WAL was flushed): a new run
    // resumes from the checkpoint the row kept, at once and using no attempt.
    if (!(await handBack(deps, row))) return { outcome: 'fenced' };
    log.warn({ jobId: row.id, err: err.message }, 'chunks committed by this run were lost; resuming from the checkpoint kept');
    return { outcome: 'handed_back', reason: 'checkpoint_lost' };
  }
  if (sqlState(err) === '55P03') {
    // A lock timeout is contention, not a fault of the job: another transaction holds a lock on
    // what the chunk writes (a migration, a long report). The chunk rolled back whole; the job
    // waits it out as a delayed hand-back that uses no attempt, bounded by its maximum run time.
    // Counted as attempts, a lock held for 60 s failed an import: 5 attempts with 2 s exponential
    // backoff last about 40 s (fault suite, test/faults/postgres.test.ts).
    const backoffMs = jobDefinition(row.type)?.defaults.backoffMs ?? 2_000;
    const delayMs = Math.round(backoffMs * (0.5 + Math.random()));
    if (!(await handBack(deps, row, delayMs))) return { outcome: 'fenced' };
    log.warn({ jobId: row.id, err: info.message, delayMs }, 'chunk hit a lock timeout; waiting for the lock without using an attempt');
    return { outcome: 'handed_back', reason: 'lock_wait' };
  }
  if (isConnectionError(err) && !(await databaseAnswers(deps))) {
    // The database went away under the run (a restart, a failover): the chunk rolled back, and
    // nothing can be recorded until it is back. Not the job's fault: wait, using no attempt.
    // A run that committed chunks since its claim got through the last outage: this is a new one.
    await waitOutOutage(job, token, deps, err, run.chunkSeq > row.chunkSeq);
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
 * A new delivery of the job, which continues from its checkpoint and uses no attempt (this run's
 * ends without failing). False when the row's lease moved on: another run holds the job.
 */
async function handBack(deps: RunnerDeps, row: Omit<DispatchRow, 'dispatches'> & { lease: number }, delayMs?: number): Promise<boolean> {
  const dispatch = await nextDispatch(deps.database.db, row.id, { lease: row.lease });
  if (dispatch === undefined) return false;
  await deps.producer.dispatch({ ...row, dispatches: dispatch }, delayMs === undefined ? {} : { delayMs });
  return true;
}

/**
 * Puts the delivery back as delayed, using no attempt, while the database cannot be reached:
 * with attempts counted, an outage longer than the backoff schedule (5 attempts, 2 s exponential:
 * ~30 s) failed the job in Redis while its history row, unwritable, stayed `active` for good
 * (fault suite, a 45 s PostgreSQL outage). The wait is bounded by `dbOutageGraceMs` from the first
 * failure (kept in the BullMQ job's data), and the clock only starts over once a run has committed
 * chunks since (`progressed`): a job that itself brings the database down (a statement that
 * crashes its backend) makes no progress, and past the grace its failures count as usual.
 * Returns only when the grace is spent.
 */
async function waitOutOutage(job: Job, token: string | undefined, deps: RunnerDeps, err: unknown, progressed: boolean): Promise<void> {
  const now = Date.now();
  const recorded = typeof job.data?.dbOutageSince === 'number' ? (job.data.dbOutageSince as number) : undefined;
  const since = recorded === undefined || progressed ? now : recorded;
  if (now - since > (deps.dbOutageGraceMs ?? 10 * 60_000)) return;
  if (since !== recorded) await job.updateData({ ...job.data, dbOutageSince: since });
  const delayMs = Math.round(OUTAGE_RETRY_MS * (0.5 + Math.random()));
  deps.log.warn(
    { jobId: (job.data as { jobId?: string }).jobId, err: err instanceof Error ? err.message : String(err), delayMs, outageS: Math.round((now - since) / 1000) },
    'database unreachable; waiting for it without using an attempt',
  );
  await job.moveToDelayed(now + delayMs, token);
  throw new DelayedError();
}

/** Mean wait between two tries of a delivery while the database cannot be reached. */
const OUTAGE_RETRY_MS = 2_000;

/** Whether the database answers a trivial query within 2 s (a dropped connection may be one of many). */
async function databaseAnswers(deps: RunnerDeps): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      deps.database.pool.query('select 1').then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 2_000))),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
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

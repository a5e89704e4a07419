import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_QUEUE_PREFIX, QUEUE_NAMES } from '@platform/jobs';
import type { ChunkFault } from '@platform/jobs/processors';

const int = (def: number) => z.coerce.number().int().positive().default(def);

const schema = z
  .object({
    DATABASE_URL: z.string().min(1),
    /** Optional read replica: exports read their pages there instead of the primary (empty = none). */
    DATABASE_REPLICA_URL: z.string().optional(),
    REDIS_URL: z.string().min(1),
    QUEUE_PREFIX: z.string().min(1).default(DEFAULT_QUEUE_PREFIX),
    BLOB_DIR: z.string().min(1).optional(),
    WORKER_PORT: z.coerce.number().int().min(0).max(65535).default(3002),
    WORKER_QUEUES: z.string().default('all'),
    WORKER_CONCURRENCY: int(4),
    /** Connections this process may hold; one more than the concurrency, for housekeeping. */
    WORKER_DB_POOL_MAX: z.coerce.number().int().positive().optional(),
    /** The first chunk's rows, before anything is measured (a first chunk of 2,000 was the bench's longest). */
    WORKER_CHUNK_SIZE: int(1_000),
    WORKER_LOCK_TIMEOUT_MS: int(2_000),
    WORKER_STATEMENT_TIMEOUT_MS: int(15_000),
    WORKER_IDLE_IN_TX_TIMEOUT_MS: int(30_000),
    WORKER_LOCK_DURATION_MS: int(30_000),
    WORKER_STALLED_INTERVAL_MS: int(30_000),
    WORKER_MAX_STALLED_COUNT: int(3),
    WORKER_BLOCKED_RETRY_MS: int(500),
    /** A job waits this long for an unreachable database without using its attempts. */
    WORKER_DB_OUTAGE_GRACE_MS: int(10 * 60_000),
    /** Connections all workers together may hold, leased through Redis; 0 turns the budget off. */
    WORKER_DB_BUDGET: z.coerce.number().int().min(0).default(20),
    WORKER_DB_BUDGET_TTL_MS: int(15_000),
    /** Chunk transactions aim at this duration; 0 keeps every chunk at WORKER_CHUNK_SIZE. */
    WORKER_CHUNK_BUDGET_MS: z.coerce.number().int().min(0).default(200),
    WORKER_CHUNK_MIN: int(100),
    /**
     * At most this many rows per chunk, however cheap the rows: a chunk's rows and the next one's,
     * read ahead, are in memory at once (20,000 made the 1M import's peak RSS the larger one).
     */
    WORKER_CHUNK_MAX: int(10_000),
    /**
     * `always`: import, bulk-write and publish chunks are written in parts, and a chunk is cut short after
     * a part when one more would take it past 50% of WORKER_CHUNK_BUDGET_MS (the parts left commit
     * as the next chunk). `shared`: only for a run beside other runs of its process; a run alone
     * writes whole chunks, uncut (fewer statements: a faster lone import, a longer tail).
     */
    WORKER_CHUNK_PARTS: z.enum(['always', 'shared']).default('always'),
    /** Rows per export page: a page is read outside any transaction, so no chunk budget bounds it. */
    WORKER_EXPORT_PAGE_ROWS: int(20_000),
    /** An export reads pages for this long, then syncs its file and commits one checkpoint for them. */
    WORKER_EXPORT_CHUNK_MS: int(500),
    /** An export cuts its rows into this many id ranges, read side by side while it has its worker to itself. */
    WORKER_EXPORT_READERS: int(2),
    /** A run holds a slot at least this long before yielding to another team's waiting job. */
    WORKER_TIME_SLICE_MS: int(1_000),
    WORKER_PRESSURE_PAUSE_MS: int(200),
    /**
     * After the API's pressure signal is gone, runs keep pausing before their chunks for this long,
     * less and less (a run that starts while the studio is busy starts paced); 0 turns it off.
     */
    WORKER_PRESSURE_MEMORY_MS: z.coerce.number().int().min(0).default(30_000),
    /** How often one worker (whichever takes the Redis lock) sweeps expired blobs; 0 turns it off. */
    WORKER_BLOB_SWEEP_MS: z.coerce.number().int().min(0).default(10 * 60_000),
    /** A failed job's upload is kept this long for a retry. */
    BLOB_INPUT_RETENTION_DAYS: z.coerce.number().positive().default(7),
    /** An export's file is kept this long after it completed. */
    EXPORT_RETENTION_DAYS: z.coerce.number().positive().default(7),
    /** `false` gives plain FIFO (no team interleaving, no yields): the benchmarks' baseline. */
    FAIR_SCHEDULING: z.enum(['true', 'false']).default('true'),
    /** Default cap of a team's running jobs (teams.max_running_jobs overrides); 0 means none. */
    WORKER_TEAM_MAX_RUNNING: z.coerce.number().int().min(0).default(8),
    /** Overrides every job type's maximum run time. */
    WORKER_MAX_RUN_TIME_MS: z.coerce.number().int().positive().optional(),
    /** Bounded below the orchestrator's grace period (compose and Kubernetes default to 30 s). */
    WORKER_SHUTDOWN_TIMEOUT_MS: int(20_000),
    /** Test-only fault injection inside a chunk transaction: `throw@N` or `kill@N`. */
    CHUNK_FAULT: z
      .string()
      .regex(/^(throw|kill)@\d+$/, 'CHUNK_FAULT is throw@N or kill@N')
      .optional(),
    LOG_LEVEL: z.string().default('info'),
  })
  .transform((c, ctx) => {
    const queues = c.WORKER_QUEUES === 'all' ? QUEUE_NAMES : c.WORKER_QUEUES.split(',').map((q) => q.trim());
    for (const q of queues) {
      if (!QUEUE_NAMES.includes(q)) {
        ctx.addIssue({ code: 'custom', message: `WORKER_QUEUES: unknown queue ${q} (known: ${QUEUE_NAMES.join(', ')})` });
      }
    }
    const poolMax = c.WORKER_DB_POOL_MAX ?? c.WORKER_CONCURRENCY + 1;
    if (poolMax < c.WORKER_CONCURRENCY + 1) {
      ctx.addIssue({
        code: 'custom',
        message: `WORKER_DB_POOL_MAX (${poolMax}) must be at least WORKER_CONCURRENCY + 1 (${c.WORKER_CONCURRENCY + 1})`,
      });
    }
    let fault: ChunkFault | undefined;
    if (c.CHUNK_FAULT) {
      const [action, at] = c.CHUNK_FAULT.split('@') as ['throw' | 'kill', string];
      fault = { action, atChunk: Number(at) };
    }
    return {
      databaseUrl: c.DATABASE_URL,
      replicaDatabaseUrl: c.DATABASE_REPLICA_URL || undefined,
      redisUrl: c.REDIS_URL,
      queuePrefix: c.QUEUE_PREFIX,
      blobDir: path.resolve(c.BLOB_DIR ?? path.join(process.env.INIT_CWD ?? process.cwd(), '.data/blobs')),
      port: c.WORKER_PORT,
      queues,
      concurrency: c.WORKER_CONCURRENCY,
      poolMax,
      chunkSize: c.WORKER_CHUNK_SIZE,
      lockTimeoutMs: c.WORKER_LOCK_TIMEOUT_MS,
      statementTimeoutMs: c.WORKER_STATEMENT_TIMEOUT_MS,
      idleInTxTimeoutMs: c.WORKER_IDLE_IN_TX_TIMEOUT_MS,
      lockDurationMs: c.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: c.WORKER_STALLED_INTERVAL_MS,
      maxStalledCount: c.WORKER_MAX_STALLED_COUNT,
      blockedRetryMs: c.WORKER_BLOCKED_RETRY_MS,
      dbOutageGraceMs: c.WORKER_DB_OUTAGE_GRACE_MS,
      dbBudget: c.WORKER_DB_BUDGET,
      dbBudgetTtlMs: c.WORKER_DB_BUDGET_TTL_MS,
      chunkBudgetMs: c.WORKER_CHUNK_BUDGET_MS,
      chunkMin: c.WORKER_CHUNK_MIN,
      chunkMax: c.WORKER_CHUNK_MAX,
      chunkParts: c.WORKER_CHUNK_PARTS,
      exportPageRows: c.WORKER_EXPORT_PAGE_ROWS,
      exportChunkMs: c.WORKER_EXPORT_CHUNK_MS,
      exportReaders: c.WORKER_EXPORT_READERS,
      timeSliceMs: c.WORKER_TIME_SLICE_MS,
      pressurePauseMs: c.WORKER_PRESSURE_PAUSE_MS,
      pressureMemoryMs: c.WORKER_PRESSURE_MEMORY_MS,
      fair: c.FAIR_SCHEDULING === 'true',
      blobSweepMs: c.WORKER_BLOB_SWEEP_MS,
      inputRetentionMs: c.BLOB_INPUT_RETENTION_DAYS * 86_400_000,
      exportRetentionMs: c.EXPORT_RETENTION_DAYS * 86_400_000,
      teamMaxRunning: c.WORKER_TEAM_MAX_RUNNING,
      maxRunTimeMs: c.WORKER_MAX_RUN_TIME_MS,
      shutdownTimeoutMs: c.WORKER_SHUTDOWN_TIMEOUT_MS,
      fault,
      logLevel: c.LOG_LEVEL,
    };
  });

export type WorkerConfig = z.output<typeof schema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || 'config'}: ${i.message}`);
    throw new Error(`invalid worker configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

import { sql } from 'drizzle-orm';
import {
  bigint,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core';
import { teams } from './teams';

export const JOB_STATUSES = ['queued', 'active', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const jobStatus = pgEnum('job_status', JOB_STATUSES);

export interface JobErrorInfo {
  code: string;
  message: string;
  details?: unknown[];
  invalidCount?: number;
  stack?: string;
}

/**
 * The job history: the record of every job from acceptance until long after Redis forgot it.
 * A BullMQ job names its row; a continuation or retry is a new BullMQ job for the same row.
 *
 * Chunk protocol: `chunk_seq` counts committed chunks and `lease` counts runs. A chunk commits
 * only if both are what its run started from, so a stale run (or a replayed chunk) commits nothing.
 */
export const jobs = pgTable(
  'jobs',
  {
    id: uuid('id').primaryKey(),
    seq: bigint('seq', { mode: 'number' }).generatedAlwaysAsIdentity().notNull(),
    teamId: uuid('team_id')
      .notNull()
      .references(() => teams.id, { onDelete: 'cascade' }),
    type: text('type').notNull(),
    queue: text('queue').notNull(),
    status: jobStatus('status').notNull().default('queued'),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    // Resources the job writes (e.g. `cms_table:<id>`): jobs sharing one run one at a time, in `seq` order.
    lockKeys: text('lock_keys').array().notNull().default(sql`'{}'::text[]`),
    progressDone: bigint('progress_done', { mode: 'number' }).notNull().default(0),
    progressTotal: bigint('progress_total', { mode: 'number' }),
    attempts: integer('attempts').notNull().default(0),
    checkpoint: jsonb('checkpoint').$type<unknown>(),
    chunkSeq: integer('chunk_seq').notNull().default(0),
    lease: integer('lease').notNull().default(0),
    leaseOwner: text('lease_owner'),
    dispatches: integer('dispatches').notNull().default(0),
    cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
    error: jsonb('error').$type<JobErrorInfo>(),
    result: jsonb('result').$type<unknown>(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('jobs_team_created_idx').on(t.teamId, t.createdAt.desc(), t.id.desc()),
    index('jobs_status_idx').on(t.status),
    index('jobs_lock_keys_idx')
      .using('gin', t.lockKeys)
      .where(sql`${t.status} in ('queued', 'active')`),
  ],
);

/** One row per committed chunk: the timeline support staff read, and the bench's chunk durations. */
export const jobChunks = pgTable(
  'job_chunks',
  {
    jobId: uuid('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    seq: integer('seq').notNull(),
    lease: integer('lease').notNull(),
    rows: integer('rows').notNull(),
    /**
     * The chunk's transaction by PostgreSQL's clock: from its BEGIN to its checkpoint statement,
     * which its COMMIT follows in the same query (`clock_timestamp() - now()`).
     */
    durationMs: integer('duration_ms').notNull(),
    /**
     * The same chunk as its worker timed it: from sending its first statement to the answer to its
     * COMMIT, the worker's own delays on either side included. Written after the COMMIT (by the
     * run's next chunk, or when the run ends); null until then, or when the run died first.
     */
    workerMs: integer('worker_ms'),
    committedAt: timestamp('committed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.seq] })],
);

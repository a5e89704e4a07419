import { sql } from 'drizzle-orm';
import { bigint, index, integer, jsonb, pgTable, primaryKey, real, text, timestamp, uuid } from 'drizzle-orm/pg-core';

/**
 * The support dashboard's own records: the audit trail of staff actions and the queue samples
 * behind its charts. Neither references `jobs`: the audit log outlives the job history it names
 * (1 year against 90 days by default), and samples are per queue, not per job.
 */

export const auditLog = pgTable(
  'audit_log',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    /** The staff username, and the role and credential it acted with. */
    actor: text('actor').notNull(),
    actorRole: text('actor_role').notNull(),
    via: text('via').notNull(),
    /** `job.cancel`, `job.retry`, `jobs.redrive`, … */
    action: text('action').notNull(),
    /** What the staff member asked for: a job id, or the filter of a redrive. */
    params: jsonb('params').$type<Record<string, unknown>>().notNull(),
    /** The jobs the action touched (or was about to touch, while `outcome` is null). */
    jobIds: uuid('job_ids').array().notNull().default(sql`'{}'::uuid[]`),
    /** Null while the action runs; a process that died mid-action leaves it null. */
    outcome: jsonb('outcome').$type<Record<string, unknown>>(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    index('audit_log_at_idx').on(t.at),
    index('audit_log_job_ids_idx').using('gin', t.jobIds),
  ],
);

/**
 * Queue depth and throughput over time, one row per queue per sample. Raw rows cover `step_s` = 10
 * seconds; as they age they are averaged into 300-second rows. `at` is the end of the interval the
 * row covers: depths were read at `at`, the counts are of jobs that ended within (at - step_s, at].
 */
export const queueSamples = pgTable(
  'queue_samples',
  {
    queue: text('queue').notNull(),
    stepS: integer('step_s').notNull(),
    at: timestamp('at', { withTimezone: true }).notNull(),
    waiting: real('waiting').notNull(),
    active: real('active').notNull(),
    delayed: real('delayed').notNull(),
    /** BullMQ's failed set (kept failures, bounded by retention), not the history's. */
    failed: real('failed').notNull(),
    completedCount: integer('completed_count').notNull(),
    failedCount: integer('failed_count').notNull(),
  },
  (t) => [primaryKey({ columns: [t.queue, t.stepS, t.at] }), index('queue_samples_at_idx').on(t.at)],
);

import { bigint, index, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { jobs } from './jobs';

/**
 * What happened to a job besides its committed chunks (those are in `job_chunks`): runs claimed,
 * retries, fairness yields, hand-backs on shutdown, cancel requests, requeues, the end. The worker
 * and the dashboard write them with `recordJobEvent`; the dashboard's job page shows them.
 * `kind` is text, not an enum, so a new kind needs no migration; JOB_EVENT_KINDS lists the known ones.
 */
export const JOB_EVENT_KINDS = [
  'claimed',
  'retry',
  'yield',
  'handed_back',
  'cancel_requested',
  'cancelled',
  'requeued',
  'completed',
  'failed',
  'fenced',
  'stalled',
] as const;
export type JobEventKind = (typeof JOB_EVENT_KINDS)[number];

export const jobEvents = pgTable(
  'job_events',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    jobId: uuid('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    kind: text('kind').$type<JobEventKind | (string & {})>().notNull(),
    detail: jsonb('detail').$type<Record<string, unknown>>(),
  },
  (t) => [index('job_events_job_at_idx').on(t.jobId, t.at)],
);

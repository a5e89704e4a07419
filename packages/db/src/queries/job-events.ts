import { asc, eq } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { jobEvents, type JobEventKind } from '../schema/index';

export type JobEventRow = typeof jobEvents.$inferSelect;

export interface NewJobEvent {
  jobId: string;
  kind: JobEventKind | (string & {});
  /** Small and structured: a lease, a reason, who asked. Never row data. */
  detail?: Record<string, unknown> | null;
  /** Defaults to the database's now(), the clock `jobs` and `job_chunks` use too. */
  at?: Date;
}

/**
 * Appends one event to a job's timeline. Pass the chunk transaction (or the one that changes the
 * job's status) as `db`, so the event exists exactly when the change it describes does.
 */
export async function recordJobEvent(db: DbOrTx, event: NewJobEvent): Promise<void> {
  await db.insert(jobEvents).values({
    jobId: event.jobId,
    kind: event.kind,
    detail: event.detail ?? null,
    ...(event.at ? { at: event.at } : {}),
  });
}

/** A job's events, oldest first, bounded. */
export async function listJobEvents(db: DbOrTx, jobId: string, limit = 500): Promise<JobEventRow[]> {
  return db.select().from(jobEvents).where(eq(jobEvents.jobId, jobId)).orderBy(asc(jobEvents.at), asc(jobEvents.id)).limit(limit);
}

import { and, desc, eq, sql, type SQL } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { auditLog } from '../schema/index';

export type AuditEntry = typeof auditLog.$inferSelect;

export interface NewAuditEntry {
  actor: string;
  actorRole: string;
  via: string;
  action: string;
  params: Record<string, unknown>;
  jobIds?: string[];
}

/**
 * Writes the entry before the action runs, so an action whose process dies half-way is still on
 * record (with a null outcome); `finishAudit` fills in what happened.
 */
export async function startAudit(db: DbOrTx, entry: NewAuditEntry): Promise<AuditEntry> {
  const [row] = await db
    .insert(auditLog)
    .values({ ...entry, jobIds: entry.jobIds ?? [] })
    .returning();
  return row!;
}

export async function finishAudit(
  db: DbOrTx,
  id: number,
  outcome: Record<string, unknown>,
  jobIds?: string[],
): Promise<AuditEntry | undefined> {
  const [row] = await db
    .update(auditLog)
    .set({ outcome, finishedAt: sql`now()`, ...(jobIds ? { jobIds } : {}) })
    .where(eq(auditLog.id, id))
    .returning();
  return row;
}

export interface AuditFilter {
  jobId?: string;
  actor?: string;
  limit: number;
  /** Keyset cursor: the id of the last entry of the previous page (ids grow with time). */
  beforeId?: number;
}

/** Newest first. A job's entries are found through the GIN index on `job_ids`. */
export async function listAuditLog(db: DbOrTx, f: AuditFilter): Promise<AuditEntry[]> {
  const conds: SQL[] = [];
  if (f.jobId) conds.push(sql`${auditLog.jobIds} @> array[${f.jobId}]::uuid[]`);
  if (f.actor) conds.push(eq(auditLog.actor, f.actor));
  if (f.beforeId !== undefined) conds.push(sql`${auditLog.id} < ${f.beforeId}`);
  return db
    .select()
    .from(auditLog)
    .where(conds.length ? and(...conds) : undefined)
    .orderBy(desc(auditLog.id))
    .limit(f.limit);
}

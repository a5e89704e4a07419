import {
  failUnqueued,
  finishAudit,
  getJob,
  listFailedJobIds,
  recordJobEvent,
  requestCancel,
  requeueJob,
  startAudit,
  type Db,
  type JobRow,
} from '@platform/db';
import { bullJobId, jobDefinition, type Producer } from '@platform/jobs';
import type { StaffIdentity } from './auth';

/**
 * What operators may do to jobs, each written to the audit log. The entry is written before the
 * action (so an action whose process dies half-way is still on record, with no outcome) and
 * completed with what happened. The history changes are the same as the API's cancel and retry:
 * `requestCancel` (a running job stops at its next chunk boundary, on whichever worker runs it)
 * and `requeueJob` + `Producer.dispatch`, with `failUnqueued` when Redis refuses the dispatch.
 */

export type ActionResult =
  | { kind: 'done'; job: JobRow; auditId: number; outcome: string }
  | { kind: 'not_found' }
  | { kind: 'conflict'; job: JobRow; auditId: number; message: string }
  | { kind: 'unavailable'; job: JobRow; auditId: number; message: string };

export interface RedriveFilter {
  type?: string;
  /** As typed (an id or a name), for the record. */
  team?: string;
  teamIds?: string[];
}

export interface RedriveResult {
  auditId: number;
  matched: number;
  requeued: string[];
  /** No longer failed when their turn came (someone else retried them). */
  skipped: number;
  /** Not requeued because Redis stopped answering: they stay failed. */
  notAttempted: number;
  dispatchFailed: number;
}

const auditOf = (staff: StaffIdentity) => ({ actor: staff.username, actorRole: staff.role, via: staff.via });

export class StaffActions {
  constructor(
    private readonly db: Db,
    private readonly producer: Producer,
    /** At most this many jobs per redrive (default 1,000). */
    readonly redriveMax: number,
  ) {}

  async cancel(staff: StaffIdentity, jobId: string): Promise<ActionResult> {
    const before = await getJob(this.db, jobId);
    if (!before) return { kind: 'not_found' };
    // One transaction: the request, its event and its audit entry exist together or not at all.
    const { audit, updated } = await this.db.transaction(async (tx) => {
      const audit = await startAudit(tx, { ...auditOf(staff), action: 'job.cancel', params: { jobId }, jobIds: [jobId] });
      const updated = await requestCancel(tx, jobId);
      if (updated) {
        await recordJobEvent(tx, {
          jobId,
          kind: updated.status === 'cancelled' ? 'cancelled' : 'cancel_requested',
          // How far the job had got when the request committed: the run may add at most the chunk
          // it had in flight (the request and the chunk's checkpoint update lock the same row).
          detail: { by: staff.username, via: 'dashboard', auditId: audit.id, doneAtRequest: updated.progressDone },
        });
      }
      const outcome = updated
        ? { result: updated.status === 'cancelled' ? 'cancelled' : 'cancel_requested', statusBefore: before.status }
        : { result: 'conflict', statusBefore: before.status, message: 'the job already ended' };
      await finishAudit(tx, audit.id, outcome);
      return { audit, updated };
    });
    if (!updated) {
      const now = (await getJob(this.db, jobId)) ?? before;
      return { kind: 'conflict', job: now, auditId: audit.id, message: `the job already ended (${now.status})` };
    }
    if (updated.status === 'cancelled') {
      // Best effort: a worker skips a cancelled row anyway; this only tidies Redis.
      const def = jobDefinition(updated.type);
      if (def) await this.producer.queue(def.queue).remove(bullJobId(updated.id, updated.dispatches)).catch(() => {});
    }
    return { kind: 'done', job: updated, auditId: audit.id, outcome: updated.status === 'cancelled' ? 'cancelled' : 'cancel_requested' };
  }

  async retry(staff: StaffIdentity, jobId: string): Promise<ActionResult> {
    const before = await getJob(this.db, jobId);
    if (!before) return { kind: 'not_found' };
    const audit = await startAudit(this.db, { ...auditOf(staff), action: 'job.retry', params: { jobId }, jobIds: [jobId] });
    const queued = await this.db.transaction(async (tx) => {
      const row = await requeueJob(tx, jobId);
      if (row) await recordJobEvent(tx, { jobId, kind: 'requeued', detail: { by: staff.username, via: 'dashboard', auditId: audit.id } });
      return row;
    });
    if (!queued) {
      const now = (await getJob(this.db, jobId)) ?? before;
      const message = `only a failed or cancelled job can be retried (this one is ${now.status})`;
      await finishAudit(this.db, audit.id, { result: 'conflict', statusBefore: now.status, message });
      return { kind: 'conflict', job: now, auditId: audit.id, message };
    }
    try {
      await this.producer.dispatch(queued);
    } catch (err) {
      await failUnqueued(this.db, queued.id, { code: 'dependency_unavailable', message: 'the retry could not be queued' });
      await finishAudit(this.db, audit.id, { result: 'dispatch_failed', statusBefore: before.status, error: String(err) });
      return { kind: 'unavailable', job: (await getJob(this.db, jobId)) ?? queued, auditId: audit.id, message: 'the job queue (Redis) does not answer; the job stays failed' };
    }
    await finishAudit(this.db, audit.id, { result: 'requeued', statusBefore: before.status });
    return { kind: 'done', job: queued, auditId: audit.id, outcome: 'requeued' };
  }

  /**
   * Requeues the failed jobs of a type and/or team, oldest first, at most `redriveMax` of them.
   * Stops at the first dispatch Redis refuses: that job ends failed again (`failUnqueued`) and the
   * rest are left failed and untouched, instead of each waiting out its own timeout.
   */
  async redrive(staff: StaffIdentity, filter: RedriveFilter): Promise<RedriveResult> {
    const ids = await listFailedJobIds(this.db, { type: filter.type, teamIds: filter.teamIds, limit: this.redriveMax });
    const audit = await startAudit(this.db, {
      ...auditOf(staff),
      action: 'jobs.redrive',
      params: { type: filter.type ?? null, team: filter.team ?? null, teamIds: filter.teamIds ?? null, limit: this.redriveMax },
      jobIds: ids,
    });
    const requeued: string[] = [];
    let skipped = 0;
    let dispatchFailed = 0;
    let stopped = false;
    let next = 0;
    // A few at a time: 1,000 requeues take about a second, not one round trip after another.
    const lane = async () => {
      while (!stopped) {
        const id = ids[next++];
        if (id === undefined) return;
        const row = await this.db.transaction(async (tx) => {
          const r = await requeueJob(tx, id);
          if (r) await recordJobEvent(tx, { jobId: id, kind: 'requeued', detail: { by: staff.username, via: 'dashboard', redrive: true, auditId: audit.id } });
          return r;
        });
        if (!row) {
          skipped++;
          continue;
        }
        try {
          await this.producer.dispatch(row);
          requeued.push(id);
        } catch {
          stopped = true;
          dispatchFailed++;
          await failUnqueued(this.db, id, { code: 'dependency_unavailable', message: 'the redrive could not queue the job' });
        }
      }
    };
    let failure: unknown;
    const guarded = () =>
      lane().catch((err: unknown) => {
        stopped = true;
        failure ??= err;
      });
    // Every lane has stopped before the outcome is written.
    await Promise.all(Array.from({ length: Math.min(8, ids.length) }, guarded));
    const notAttempted = Math.max(0, ids.length - requeued.length - skipped - dispatchFailed);
    const outcome = {
      result: failure ? 'error' : stopped ? 'stopped' : 'requeued',
      matched: ids.length,
      requeued: requeued.length,
      skipped,
      dispatchFailed,
      notAttempted,
      ...(failure ? { error: String(failure) } : {}),
    };
    await finishAudit(this.db, audit.id, outcome, requeued);
    if (failure) throw failure;
    return { auditId: audit.id, matched: ids.length, requeued, skipped, notAttempted, dispatchFailed };
  }
}

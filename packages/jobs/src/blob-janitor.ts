import { sql } from 'drizzle-orm';
import type { Db } from '@platform/db';
import type { BlobStore } from './blob-store';

/**
 * The blob lifecycle. An upload (an import's file, a bulk write's operations) is deleted once its
 * job completed; a failed or cancelled job keeps it for a retry (the contract lets both resume
 * from their last chunk), up to `inputRetentionMs` after it ended.
 * An export is kept for `exportRetentionMs` after it completed, then deleted (its download then
 * says it expired). Blobs whose job row does not exist (the API died between storing and
 * recording) and part files of ended exports are removed too, after a grace period.
 */
export interface JanitorOptions {
  inputRetentionMs: number;
  exportRetentionMs: number;
  /** Age under which a blob with no job row is left alone: its job may be being recorded now. */
  orphanGraceMs?: number;
  now?: number;
}

const FOLDERS = ['imports', 'bulk', 'exports'] as const;
const JOB_ID = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\./i;

export async function sweepBlobs(db: Db, blobs: BlobStore, opts: JanitorOptions): Promise<{ scanned: number; deleted: string[] }> {
  const now = opts.now ?? Date.now();
  const grace = opts.orphanGraceMs ?? 60 * 60_000;
  const found: { key: string; modifiedAt: number; jobId: string; folder: (typeof FOLDERS)[number]; part: boolean }[] = [];
  for (const folder of FOLDERS) {
    for await (const b of blobs.list(folder)) {
      const name = b.key.slice(b.key.lastIndexOf('/') + 1);
      const m = JOB_ID.exec(name);
      if (m) found.push({ ...b, jobId: m[1]!.toLowerCase(), folder, part: b.key.startsWith('exports/parts/') });
    }
  }
  const deleted: string[] = [];
  for (let i = 0; i < found.length; i += 500) {
    const batch = found.slice(i, i + 500);
    const ids = [...new Set(batch.map((b) => b.jobId))];
    const rows = await db.execute<{ id: string; status: string; finished_at: Date | null }>(
      sql`select id, status, finished_at from jobs where id = any(${sql.param(ids)}::uuid[])`,
    );
    const byId = new Map(rows.rows.map((r) => [r.id, r]));
    for (const b of batch) {
      const job = byId.get(b.jobId);
      const ended = job?.finished_at ? new Date(job.finished_at).getTime() : undefined;
      let drop: boolean;
      if (!job) drop = now - b.modifiedAt > grace;
      else if (job.status === 'queued' || job.status === 'active') drop = false;
      else if (b.part) drop = true;
      else if (b.folder === 'exports') drop = job.status !== 'completed' || (ended !== undefined && now - ended > opts.exportRetentionMs);
      else if (job.status === 'completed') drop = true; // the upload has served its purpose
      else drop = ended !== undefined && now - ended > opts.inputRetentionMs; // failed or cancelled
      if (drop) {
        await blobs.delete(b.key);
        deleted.push(b.key);
      }
    }
  }
  return { scanned: found.length, deleted };
}

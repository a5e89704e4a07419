import { and, asc, count, eq, gt, isNotNull, isNull, type SQL } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { cmsRows } from '../schema/index';

/** What an export covers: with `published`, the rows that have live data; otherwise every row not deleted. */
export interface ExportFilter {
  tableId: string;
  teamId: string;
  published: boolean;
}

export interface ExportRow {
  id: string;
  identifier: string;
  /** The live `data` (published) or the `draft_data`. */
  data: Record<string, unknown> | null;
}

function exportConditions(f: ExportFilter, afterId?: string): SQL[] {
  // Same rows as `listRows` lists: soft-deleted rows are never exported, live data or not.
  const conds = [eq(cmsRows.tableId, f.tableId), eq(cmsRows.teamId, f.teamId), isNull(cmsRows.deletedAt)];
  if (f.published) conds.push(isNotNull(cmsRows.data));
  if (afterId) conds.push(gt(cmsRows.id, afterId));
  return conds;
}

/**
 * A keyset page of an export (never OFFSET: page N costs what page 1 does), in id order, on the
 * `(table_id, id)` index. Only the exported side of the row is read, not both.
 */
export async function exportRowsPage(db: DbOrTx, f: ExportFilter & { limit: number; afterId?: string }): Promise<ExportRow[]> {
  return db
    .select({ id: cmsRows.id, identifier: cmsRows.identifier, data: f.published ? cmsRows.data : cmsRows.draftData })
    .from(cmsRows)
    .where(and(...exportConditions(f, f.afterId)))
    .orderBy(asc(cmsRows.id))
    .limit(f.limit);
}

/** How many rows an export covers when it starts (its `progress.total`). */
export async function countExportRows(db: DbOrTx, f: ExportFilter): Promise<number> {
  const [row] = await db.select({ n: count() }).from(cmsRows).where(and(...exportConditions(f)));
  return row?.n ?? 0;
}

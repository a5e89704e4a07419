import { and, asc, eq, gt, isNotNull, isNull } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { uuidv7 } from '../ids';
import { cmsRows, cmsTables, type CmsField } from '../schema/index';

export type CmsTableRow = typeof cmsTables.$inferSelect;
export type CmsRow = typeof cmsRows.$inferSelect;

export async function createCmsTable(
  db: DbOrTx,
  t: { teamId: string; projectId: string; name: string; fields: CmsField[] },
): Promise<CmsTableRow> {
  const [row] = await db.insert(cmsTables).values({ id: uuidv7(), ...t }).returning();
  return row!;
}

export async function getCmsTable(db: DbOrTx, id: string, teamId?: string): Promise<CmsTableRow | undefined> {
  const [row] = await db
    .select()
    .from(cmsTables)
    .where(teamId ? and(eq(cmsTables.id, id), eq(cmsTables.teamId, teamId)) : eq(cmsTables.id, id));
  return row;
}

export async function listProjectTables(db: DbOrTx, projectId: string): Promise<CmsTableRow[]> {
  return db.select().from(cmsTables).where(eq(cmsTables.projectId, projectId)).orderBy(asc(cmsTables.id));
}

/** Keyset page of a table's rows (never OFFSET), in id order. */
export async function listRows(
  db: DbOrTx,
  f: { tableId: string; teamId: string; published: boolean; limit: number; afterId?: string },
): Promise<CmsRow[]> {
  const conds = [eq(cmsRows.tableId, f.tableId), eq(cmsRows.teamId, f.teamId), isNull(cmsRows.deletedAt)];
  if (f.published) conds.push(isNotNull(cmsRows.data));
  if (f.afterId) conds.push(gt(cmsRows.id, f.afterId));
  return db
    .select()
    .from(cmsRows)
    .where(and(...conds))
    .orderBy(asc(cmsRows.id))
    .limit(f.limit);
}

export async function getRow(db: DbOrTx, tableId: string, rowId: string, teamId: string): Promise<CmsRow | undefined> {
  const [row] = await db
    .select()
    .from(cmsRows)
    .where(
      and(eq(cmsRows.id, rowId), eq(cmsRows.tableId, tableId), eq(cmsRows.teamId, teamId), isNull(cmsRows.deletedAt)),
    );
  return row;
}


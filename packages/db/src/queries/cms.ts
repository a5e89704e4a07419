import { and, asc, eq, isNotNull, isNull, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { MAX_UUID, MIN_UUID, uuidv7 } from '../ids';
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

/**
 * Keyset page of a table's rows (never OFFSET), in id order. The table is chosen by bounds on
 * `(table_id, id)`, not `table_id = …`: with the equality the planner may order by the primary key
 * alone and walk it past every older row of other tables (UUIDv7 ids); the bounds keep the order
 * only the `(table_id, id)` index gives. (The export's pages do the same: `exportPageCopySql`.)
 */
export function listRowsQuery(db: DbOrTx, f: { tableId: string; teamId: string; published: boolean; limit: number; afterId?: string }) {
  const key = sql`(${cmsRows.tableId}, ${cmsRows.id})`;
  const conds = [
    f.afterId ? sql`${key} > (${f.tableId}::uuid, ${f.afterId}::uuid)` : sql`${key} >= (${f.tableId}::uuid, ${MIN_UUID}::uuid)`,
    sql`${key} <= (${f.tableId}::uuid, ${MAX_UUID}::uuid)`,
    eq(cmsRows.teamId, f.teamId),
    isNull(cmsRows.deletedAt),
  ];
  if (f.published) conds.push(isNotNull(cmsRows.data));
  return db
    .select()
    .from(cmsRows)
    .where(and(...conds))
    .orderBy(asc(cmsRows.tableId), asc(cmsRows.id))
    .limit(f.limit);
}

export async function listRows(
  db: DbOrTx,
  f: { tableId: string; teamId: string; published: boolean; limit: number; afterId?: string },
): Promise<CmsRow[]> {
  return listRowsQuery(db, f);
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


import { and, desc, eq, sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { uuidv7 } from '../ids';
import { projectRevisions, projects } from '../schema/index';

export async function createProject(db: DbOrTx, teamId: string, name: string) {
  const [row] = await db.insert(projects).values({ id: uuidv7(), teamId, name }).returning();
  return row!;
}

export async function getProject(db: DbOrTx, id: string, teamId: string) {
  const [row] = await db
    .select()
    .from(projects)
    .where(and(eq(projects.id, id), eq(projects.teamId, teamId)));
  return row;
}

/** Revisions count 1, 2, …; the unique (project, revision) index settles concurrent saves. */
export async function createRevision(db: DbOrTx, project: { id: string; teamId: string }, data: unknown) {
  const [row] = await db
    .insert(projectRevisions)
    .values({
      id: uuidv7(),
      projectId: project.id,
      teamId: project.teamId,
      data,
      revision: sql`(select coalesce(max(revision), 0) + 1 from project_revisions where project_id = ${project.id})`,
    })
    .returning({ id: projectRevisions.id, revision: projectRevisions.revision });
  return row!;
}

export async function getRevision(db: DbOrTx, projectId: string, revisionId?: string) {
  const q = db.select().from(projectRevisions);
  const [row] = revisionId
    ? await q.where(and(eq(projectRevisions.projectId, projectId), eq(projectRevisions.id, revisionId)))
    : await q.where(eq(projectRevisions.projectId, projectId)).orderBy(desc(projectRevisions.revision)).limit(1);
  return row;
}

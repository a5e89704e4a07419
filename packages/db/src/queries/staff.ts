import { asc, desc, eq } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { uuidv7 } from '../ids';
import { jobs, staffUsers, teams, type StaffRole } from '../schema/index';

/**
 * What support staff read and manage: their own accounts (the dashboard's sign-in and
 * `npm run staff`) and the cross-team job history view. Unlike every team-facing query, the
 * history read here is deliberately not filtered by team: staff see all teams.
 */

export type StaffUserRow = typeof staffUsers.$inferSelect;

/** The password hash is computed by the caller (the dashboard owns the hashing scheme). */
export async function createStaffUser(
  db: DbOrTx,
  user: { username: string; passwordHash: string; role: StaffRole },
): Promise<StaffUserRow> {
  const [row] = await db
    .insert(staffUsers)
    .values({ id: uuidv7(), username: user.username, passwordHash: user.passwordHash, role: user.role })
    .returning();
  return row!;
}

export async function getStaffUser(db: DbOrTx, username: string): Promise<StaffUserRow | undefined> {
  const [row] = await db.select().from(staffUsers).where(eq(staffUsers.username, username));
  return row;
}

export async function listStaffUsers(db: DbOrTx): Promise<Omit<StaffUserRow, 'passwordHash'>[]> {
  return db
    .select({ id: staffUsers.id, username: staffUsers.username, role: staffUsers.role, createdAt: staffUsers.createdAt })
    .from(staffUsers)
    .orderBy(asc(staffUsers.username));
}

/** True when an account was removed. */
export async function deleteStaffUser(db: DbOrTx, username: string): Promise<boolean> {
  const rows = await db.delete(staffUsers).where(eq(staffUsers.username, username)).returning({ id: staffUsers.id });
  return rows.length > 0;
}

export interface StaffJobSummary {
  id: string;
  teamId: string;
  teamName: string | null;
  type: string;
  status: (typeof jobs.$inferSelect)['status'];
  progressDone: number;
  progressTotal: number | null;
  createdAt: Date;
}

/** The newest jobs of every team, for the dashboard's history table (bounded by `limit`). */
export async function listRecentJobsAllTeams(db: DbOrTx, limit: number): Promise<StaffJobSummary[]> {
  return db
    .select({
      id: jobs.id,
      teamId: jobs.teamId,
      teamName: teams.name,
      type: jobs.type,
      status: jobs.status,
      progressDone: jobs.progressDone,
      progressTotal: jobs.progressTotal,
      createdAt: jobs.createdAt,
    })
    .from(jobs)
    .leftJoin(teams, eq(teams.id, jobs.teamId))
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(limit);
}

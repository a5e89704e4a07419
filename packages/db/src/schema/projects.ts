import { index, integer, jsonb, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { teams } from './teams';

export const projects = pgTable(
  'projects',
  {
    id: uuid('id').primaryKey(),
    teamId: uuid('team_id')
      .notNull()
      .references(() => teams.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('projects_team_idx').on(t.teamId)],
);

export const projectRevisions = pgTable(
  'project_revisions',
  {
    id: uuid('id').primaryKey(),
    projectId: uuid('project_id')
      .notNull()
      .references(() => projects.id, { onDelete: 'cascade' }),
    teamId: uuid('team_id').notNull(),
    revision: integer('revision').notNull(),
    data: jsonb('data').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('project_revisions_project_rev_uq').on(t.projectId, t.revision)],
);

export const projectVersions = pgTable(
  'project_versions',
  {
    id: uuid('id').primaryKey(),
    projectId: uuid('project_id')
      .notNull()
      .references(() => projects.id, { onDelete: 'cascade' }),
    teamId: uuid('team_id').notNull(),
    version: integer('version').notNull(),
    revisionId: uuid('revision_id')
      .notNull()
      .references(() => projectRevisions.id),
    data: jsonb('data').notNull(),
    // The publish job that made this version: a resumed publish finds it instead of making another.
    jobId: uuid('job_id'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('project_versions_project_version_uq').on(t.projectId, t.version),
    uniqueIndex('project_versions_job_uq').on(t.jobId),
  ],
);

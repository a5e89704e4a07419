import { sql } from 'drizzle-orm';
import { index, jsonb, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { projects } from './projects';
import { teams } from './teams';

export const FIELD_TYPES = ['text', 'number', 'boolean', 'datetime', 'json'] as const;
export type FieldType = (typeof FIELD_TYPES)[number];
export interface CmsField {
  name: string;
  type: FieldType;
  required?: boolean;
}

export const cmsTables = pgTable(
  'cms_tables',
  {
    id: uuid('id').primaryKey(),
    teamId: uuid('team_id')
      .notNull()
      .references(() => teams.id, { onDelete: 'cascade' }),
    projectId: uuid('project_id')
      .notNull()
      .references(() => projects.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    fields: jsonb('fields').$type<CmsField[]>().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('cms_tables_project_idx').on(t.projectId)],
);

/**
 * `draft_data` is what editors and imports write; `data` is what a publish made live.
 * Deleted rows are kept (soft delete) so a publish or an audit can still see them.
 */
export const cmsRows = pgTable(
  'cms_rows',
  {
    id: uuid('id').primaryKey(),
    tableId: uuid('table_id')
      .notNull()
      .references(() => cmsTables.id, { onDelete: 'cascade' }),
    teamId: uuid('team_id').notNull(),
    identifier: text('identifier').notNull(),
    draftData: jsonb('draft_data').$type<Record<string, unknown>>().notNull(),
    data: jsonb('data').$type<Record<string, unknown>>(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    deletedAt: timestamp('deleted_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('cms_rows_table_identifier_uq')
      .on(t.tableId, t.identifier)
      .where(sql`${t.deletedAt} is null`),
    index('cms_rows_table_id_idx').on(t.tableId, t.id),
  ],
);

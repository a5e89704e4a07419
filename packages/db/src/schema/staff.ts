import { pgEnum, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';

export const STAFF_ROLES = ['viewer', 'operator'] as const;
export type StaffRole = (typeof STAFF_ROLES)[number];
export const staffRole = pgEnum('staff_role', STAFF_ROLES);

export const staffUsers = pgTable(
  'staff_users',
  {
    id: uuid('id').primaryKey(),
    username: text('username').notNull(),
    passwordHash: text('password_hash').notNull(),
    role: staffRole('role').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('staff_users_username_uq').on(t.username)],
);

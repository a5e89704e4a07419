import { integer, pgTable, primaryKey, text, uuid } from 'drizzle-orm/pg-core';
import { jobs } from './jobs';

/**
 * Scratch space of a running `cms.import` under `mode=insert`: every identifier the file has
 * claimed so far, with the line that claimed it. It lets the job tell a repeat within the file
 * from a row that already exists while memory stays constant whatever the file's size (1M
 * identifiers would not fit a worker's heap comfortably). Rows are written in the same chunk
 * transactions as the checkpoint, so a resumed run sees exactly the claims of the committed
 * chunks; the job deletes its rows when it completes. Logged on purpose: an UNLOGGED table is
 * emptied by a PostgreSQL crash while the checkpoints that rely on it survive.
 */
export const cmsImportKeys = pgTable(
  'cms_import_keys',
  {
    jobId: uuid('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    identifier: text('identifier').notNull(),
    line: integer('line').notNull(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.identifier] })],
);

import { integer, pgTable, primaryKey, text, uuid } from 'drizzle-orm/pg-core';

/**
 * Scratch space of a running `cms.import` under `mode=insert`: every identifier the file has
 * claimed so far, with the line that claimed it. It lets the job tell a repeat within the file
 * from a row that already exists while memory stays constant whatever the file's size (1M
 * identifiers would not fit a worker's heap comfortably). Rows are written in the same chunk
 * transactions as the checkpoint, so a resumed run sees exactly the claims of the committed
 * chunks; the job deletes its rows when it completes. Logged on purpose: an UNLOGGED table is
 * emptied by a PostgreSQL crash while the checkpoints that rely on it survive.
 *
 * No foreign key to `jobs`: its check ran once per claimed row and doubled the cost of claiming
 * (a 1M-row import claims 1M identifiers). Claims of a job row that no longer exists (purged by
 * retention) are deleted with it by the retention pass (`purgeJobHistory`).
 */
export const cmsImportKeys = pgTable(
  'cms_import_keys',
  {
    jobId: uuid('job_id').notNull(),
    identifier: text('identifier').notNull(),
    line: integer('line').notNull(),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.identifier] })],
);

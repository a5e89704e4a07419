import type { z } from 'zod';
import { uuidv7 } from '@platform/db';
import { runChunks, type Chunk, type JobRun } from '../chunk-runner';
import { JobInputError } from '../errors';
import type { Processor, ProcessorContext } from '../processor';
import type { publishPayload } from './definition';
import {
  countConcernedRows,
  insertVersion,
  nextVersionNumber,
  publishRange,
  readBatch,
  revisionExists,
  versionOfJob,
} from './publish-sql';

type Payload = z.infer<typeof publishPayload>;

/** Committed with every chunk: where the publish is, and what it has counted so far. */
export interface PublishCheckpoint {
  versionId: string;
  version: number;
  /** Index in `payload.tableIds` of the table being published. */
  tableIndex: number;
  /** Last row id of that table already published; null at the start of the table. */
  lastId: string | null;
  /** Rows whose live data this publish changed (the result's `publishedRows`). */
  published: number;
  /** Rows gone through (progress). */
  done: number;
  total: number;
}

/**
 * `project.publish`: snapshots the revision into a new project version (chunk 1, made once: the
 * version and the checkpoint naming it commit together), then makes every row of the project's
 * tables live, table by table, in keyset batches of `chunkSize` rows by id. Each batch is one
 * chunk transaction that updates the rows whose live data changes and advances the checkpoint,
 * counts included, so a resumed run neither redoes nor double-counts a batch.
 */
export const publishProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, database, teamId } = ctx;
  const pool = database.pool;
  const start = (run.checkpoint as PublishCheckpoint | null) ?? (await makeVersion(ctx, run));

  const final = await runChunks<PublishCheckpoint>(run, start, async (at): Promise<Chunk<PublishCheckpoint> | null> => {
    let { tableIndex, lastId } = at;
    while (tableIndex < payload.tableIds.length) {
      const tableId = payload.tableIds[tableIndex]!;
      const batch = await readBatch(pool, tableId, teamId, lastId, ctx.chunkSize);
      if (batch.rows === 0) {
        tableIndex++;
        lastId = null;
        continue;
      }
      // A short batch is the table's last (jobs writing these tables wait for this one to end).
      const tableDone = batch.rows < ctx.chunkSize;
      const from = lastId;
      const to = batch.lastId!;
      const done = at.done + batch.rows;
      return {
        checkpoint: {
          ...at,
          tableIndex: tableDone ? tableIndex + 1 : tableIndex,
          lastId: tableDone ? null : to,
          published: at.published + batch.changes,
          done,
        },
        done,
        total: Math.max(at.total, done),
        rows: batch.rows,
        write: async ({ client }) => {
          const changed = await publishRange(client, tableId, teamId, from, to);
          if (changed !== batch.changes) {
            // The count committed with the checkpoint must be what was written: roll back, plan again.
            throw new Error(
              `table ${tableId}: ${changed} row(s) changed where ${batch.changes} were planned; the rows changed during the publish`,
            );
          }
        },
      };
    }
    return null;
  });
  return { versionId: final.versionId, version: final.version, publishedRows: final.published };
};

/**
 * Chunk 1: the version. A run that finds no checkpoint may still find a version made by this job
 * (the unique `job_id`), and then uses it instead of making another.
 */
async function makeVersion(ctx: ProcessorContext<Payload>, run: JobRun<PublishCheckpoint>): Promise<PublishCheckpoint> {
  const { payload, database, jobId, teamId } = ctx;
  const pool = database.pool;
  const ref = { projectId: payload.projectId, revisionId: payload.revisionId, teamId };
  if (!(await revisionExists(pool, ref))) throw new JobInputError('the revision to publish no longer exists', 'not_found');
  const total = await countConcernedRows(pool, payload.tableIds, teamId);
  const base = { tableIndex: 0, lastId: null, published: 0, done: 0, total };

  const existing = await versionOfJob(pool, jobId);
  if (existing) {
    const cp: PublishCheckpoint = { ...base, versionId: existing.id, version: existing.version };
    await run.commit({ checkpoint: cp, done: 0, total, rows: 0 });
    return cp;
  }
  const cp: PublishCheckpoint = { ...base, versionId: uuidv7(), version: await nextVersionNumber(pool, payload.projectId) };
  await run.commit({
    checkpoint: cp,
    done: 0,
    total,
    rows: 0,
    write: async ({ client }) => {
      const made = await insertVersion(client, { ...ref, id: cp.versionId, version: cp.version, jobId });
      if (!made) throw new JobInputError('the revision to publish no longer exists', 'not_found');
    },
  });
  return cp;
}

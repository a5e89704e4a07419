import type { z } from 'zod';
import { uuidv7 } from '@platform/db';
import type { PoolClient } from 'pg';
import { chunkOfParts, partEnds, runChunks, type Chunk, type ChunkPart, type JobRun } from '../chunk-runner';
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
 * counts included, so a resumed run neither redoes nor double-counts a batch; it is written in up
 * to 4 id ranges (`Chunk.parts`), and cut short after one when its time runs short.
 */
export const publishProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, database, teamId } = ctx;
  const pool = database.pool;
  const start = (run.checkpoint as PublishCheckpoint | null) ?? (await makeVersion(ctx, run));

  const final = await runChunks<PublishCheckpoint>(run, start, async (at): Promise<Chunk<PublishCheckpoint> | null> => {
    let { tableIndex, lastId } = at;
    while (tableIndex < payload.tableIds.length) {
      const tableId = payload.tableIds[tableIndex]!;
      const limit = ctx.chunkSize;
      const batches = await readBatch(pool, tableId, teamId, lastId, partEnds(limit));
      const rows = batches.reduce((n, b) => n + b.rows, 0);
      if (rows === 0) {
        tableIndex++;
        lastId = null;
        continue;
      }
      // A short batch is the table's last (jobs writing these tables wait for this one to end).
      const tableDone = rows < limit;
      // One part per range of the batch: its rows made live, and where the publish then is.
      const parts: ChunkPart<PublishCheckpoint>[] = [];
      let from = lastId;
      let cp = at;
      for (const [k, b] of batches.entries()) {
        const last = k === batches.length - 1;
        const range = { from, to: b.lastId!, changes: b.changes };
        cp = {
          ...cp,
          tableIndex: last && tableDone ? tableIndex + 1 : tableIndex,
          lastId: last && tableDone ? null : range.to,
          published: cp.published + b.changes,
          done: cp.done + b.rows,
        };
        parts.push({
          end: { checkpoint: cp, done: cp.done, total: Math.max(at.total, cp.done), rows: cp.done - at.done },
          write: ({ client }) => publish(client, tableId, teamId, range),
        });
        from = range.to;
      }
      const whole = { from: lastId, to: batches[batches.length - 1]!.lastId!, changes: cp.published - at.published };
      return chunkOfParts(parts, ({ client }) => publish(client, tableId, teamId, whole));
    }
    return null;
  });
  return { versionId: final.versionId, version: final.version, publishedRows: final.published };
};

/** Makes one id range live; the count committed with the checkpoint must be what was written. */
async function publish(client: PoolClient, tableId: string, teamId: string, r: { from: string | null; to: string; changes: number }): Promise<void> {
  const changed = await publishRange(client, tableId, teamId, r.from, r.to);
  if (changed !== r.changes) {
    // Roll back, plan again.
    throw new Error(`table ${tableId}: ${changed} row(s) changed where ${r.changes} were planned; the rows changed during the publish`);
  }
}

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

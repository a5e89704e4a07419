import type pg from 'pg';
import { getCmsTable } from '@platform/db';
import { runChunks, type Chunk } from '../chunk-runner';
import { deleteRows, insertRows, updateRows } from '../cms/row-writes';
import { validateRowData } from '../cms/row-data';
import { JobInputError } from '../errors';
import { readLines, take, type Line } from '../lines';
import type { Processor } from '../processor';
import { bulkOperationSchema, type BulkOperation, type bulkWritePayload } from './definition';
import { simulateOperations, type OperationProblem } from './validate';
import type { z } from 'zod';

type Payload = z.infer<typeof bulkWritePayload>;

interface Checkpoint {
  phase: 'validate' | 'write';
  /** Operations applied so far (write phase). */
  index: number;
  /** Byte offset in the operations blob of the next operation. */
  byte: number;
  inserted: number;
  updated: number;
  deleted: number;
}

const MAX_DETAILS = 100;

function parseOp(line: Line, index: number): BulkOperation {
  const parsed = bulkOperationSchema.safeParse(JSON.parse(line.text));
  if (!parsed.success) throw new JobInputError(`operation ${index} is malformed: ${parsed.error.message}`);
  return parsed.data;
}

/**
 * `cms.bulk_write`: checks every operation against the table as the earlier operations leave it,
 * writing nothing if any is invalid; then applies them in order, a chunk per transaction.
 */
export const bulkWriteProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, database, blobs } = ctx;
  const table = await getCmsTable(database.db, payload.tableId, ctx.teamId);
  if (!table) throw new JobInputError('the CMS table no longer exists', 'not_found');
  const total = payload.operationCount;
  const initial: Checkpoint = { phase: 'validate', index: 0, byte: 0, inserted: 0, updated: 0, deleted: 0 };
  let cp: Checkpoint = (run.checkpoint as Checkpoint | null) ?? initial;

  if (cp.phase === 'validate') {
    const problems: OperationProblem[] = [];
    let invalidCount = 0;
    const lines = readLines(blobs.get(payload.blobKey));
    let index = 0;
    await simulateOperations(database.db, table, (async function* () {
      for await (const line of lines) yield parseOp(line, index++);
    })(), (p) => {
      invalidCount++;
      if (problems.length < MAX_DETAILS) problems.push(p);
    }, (op, i) => {
      if (op.op === 'delete') return;
      for (const fp of validateRowData(table.fields, op.data)) {
        invalidCount++;
        if (problems.length < MAX_DETAILS) problems.push({ index: i, field: fp.field, message: `${fp.field}: ${fp.message}` });
      }
    });
    if (invalidCount > 0) {
      throw new JobInputError(
        `${invalidCount} operation problem(s); nothing was written`,
        'validation_failed',
        problems,
        invalidCount,
      );
    }
    const next: Checkpoint = { ...initial, phase: 'write' };
    await run.commit({ checkpoint: next, done: 0, total, rows: 0 });
    cp = next;
  }

  const it = readLines(blobs.get(payload.blobKey, { start: cp.byte }), cp.byte)[Symbol.asyncIterator]();
  const final = await runChunks<Checkpoint>(run, cp, async (at): Promise<Chunk<Checkpoint> | null> => {
    const lines = await take(it, ctx.chunkSize);
    if (lines.length === 0) return null;
    const ops = lines.map((l, k) => parseOp(l, at.index + k));
    const counts = { inserted: 0, updated: 0, deleted: 0 };
    for (const op of ops) counts[op.op === 'insert' ? 'inserted' : op.op === 'update' ? 'updated' : 'deleted']++;
    return {
      checkpoint: {
        phase: 'write',
        index: at.index + ops.length,
        byte: lines[lines.length - 1]!.end,
        inserted: at.inserted + counts.inserted,
        updated: at.updated + counts.updated,
        deleted: at.deleted + counts.deleted,
      },
      done: at.index + ops.length,
      total,
      rows: ops.length,
      write: ({ client }) => applyOperations(client, table, ops, at.index),
    };
  });
  return { inserted: final.inserted, updated: final.updated, deleted: final.deleted };
};

/**
 * Applies operations in order: consecutive operations of one kind (and one way of naming the row)
 * go in one statement, and a run is cut where a row repeats, so order is kept within a chunk.
 */
async function applyOperations(
  client: pg.PoolClient,
  table: { id: string; teamId: string },
  ops: BulkOperation[],
  firstIndex: number,
): Promise<void> {
  let i = 0;
  while (i < ops.length) {
    const head = ops[i]!;
    const by = head.op === 'insert' ? 'identifier' : head.id !== undefined ? 'id' : 'identifier';
    const seen = new Set<string>();
    let j = i;
    for (; j < ops.length; j++) {
      const op = ops[j]!;
      const opBy = op.op === 'insert' ? 'identifier' : op.id !== undefined ? 'id' : 'identifier';
      if (op.op !== head.op || opBy !== by) break;
      const key = op.op === 'insert' ? op.identifier : (op.id ?? op.identifier);
      if (key !== undefined) {
        if (seen.has(key)) break;
        seen.add(key);
      }
    }
    const run = ops.slice(i, j);
    let affected: number;
    if (head.op === 'insert') {
      affected = await insertRows(client, table, run as Extract<BulkOperation, { op: 'insert' }>[]);
    } else if (head.op === 'update') {
      const rows = (run as Extract<BulkOperation, { op: 'update' }>[]).map((o) => ({ key: (o.id ?? o.identifier)!, data: o.data }));
      affected = await updateRows(client, table.id, by, rows);
    } else {
      const keys = (run as Extract<BulkOperation, { op: 'delete' }>[]).map((o) => (o.id ?? o.identifier)!);
      affected = await deleteRows(client, table.id, by, keys);
    }
    if (affected !== run.length) {
      // Validation saw every row; a mismatch means the table changed under the job. Roll back the chunk.
      throw new JobInputError(
        `operations ${firstIndex + i}..${firstIndex + j - 1}: ${run.length - affected} row(s) changed since the job was checked`,
        'conflict',
      );
    }
    i = j;
  }
}

import type pg from 'pg';
import { getCmsTable } from '@platform/db';
import { chunkOfParts, partEnds, runChunks, type Chunk, type ChunkPart } from '../chunk-runner';
import { deleteRowsStatement, insertRowsStatement, updateRowsStatement } from '../cms/row-writes';
import { validateRowData } from '../cms/row-data';
import { JobInputError } from '../errors';
import { nextTurn, readLines, take, type Line } from '../lines';
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
/** Operations parsed between turns of the event loop. */
const PARSE_SLICE = 250;

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
    const ops: BulkOperation[] = [];
    for (const [k, l] of lines.entries()) {
      // Parsed in slices (`nextTurn`): thousands of operations' JSON and schema checks at once
      // held the event loop for tens of ms while other runs' transactions waited on it.
      if (k > 0 && k % PARSE_SLICE === 0) await nextTurn();
      ops.push(parseOp(l, at.index + k));
    }
    // Statements are built here, before the chunk's transaction begins (see insertRowsStatement).
    const parts: ChunkPart<Checkpoint>[] = [];
    const counts = { inserted: at.inserted, updated: at.updated, deleted: at.deleted };
    let from = 0;
    for (const to of partEnds(ops.length)) {
      const slice = ops.slice(from, to);
      for (const op of slice) counts[op.op === 'insert' ? 'inserted' : op.op === 'update' ? 'updated' : 'deleted']++;
      const statements = await operationStatements(table, slice, at.index + from);
      parts.push({
        end: {
          checkpoint: { phase: 'write', index: at.index + to, byte: lines[to - 1]!.end, ...counts },
          done: at.index + to,
          total,
          rows: to,
        },
        write: ({ client }) => runOperations(client, statements),
      });
      from = to;
    }
    return chunkOfParts(parts);
  });
  return { inserted: final.inserted, updated: final.updated, deleted: final.deleted };
};

interface OperationStatement {
  query: pg.QueryConfig;
  /** Operations `first`..`last` (job-wide indexes), one row each. */
  first: number;
  last: number;
}

/**
 * The statements that apply operations in order: consecutive operations of one kind (and one way of
 * naming the row) go in one statement, and a run is cut where a row repeats, so order is kept.
 */
async function operationStatements(
  table: { id: string; teamId: string },
  ops: BulkOperation[],
  firstIndex: number,
): Promise<OperationStatement[]> {
  const out: OperationStatement[] = [];
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
    let query: pg.QueryConfig;
    if (head.op === 'insert') {
      query = await insertRowsStatement(table, run as Extract<BulkOperation, { op: 'insert' }>[]);
    } else if (head.op === 'update') {
      const rows = (run as Extract<BulkOperation, { op: 'update' }>[]).map((o) => ({ key: (o.id ?? o.identifier)!, data: o.data }));
      query = updateRowsStatement(table.id, by, rows);
    } else {
      query = deleteRowsStatement(table.id, by, (run as Extract<BulkOperation, { op: 'delete' }>[]).map((o) => (o.id ?? o.identifier)!));
    }
    out.push({ query, first: firstIndex + i, last: firstIndex + j - 1 });
    i = j;
  }
  return out;
}

async function runOperations(client: pg.PoolClient, statements: OperationStatement[]): Promise<void> {
  for (const s of statements) {
    const affected = (await client.query(s.query)).rowCount ?? 0;
    const expected = s.last - s.first + 1;
    if (affected !== expected) {
      // Validation saw every row; a mismatch means the table changed under the job. Roll back the chunk.
      throw new JobInputError(`operations ${s.first}..${s.last}: ${expected - affected} row(s) changed since the job was checked`, 'conflict');
    }
  }
}

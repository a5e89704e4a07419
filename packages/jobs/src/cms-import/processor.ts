import type { z } from 'zod';
import { createClaimsTable, dropClaimsTable, getCmsTable, type CmsTableRow } from '@platform/db';
import { chunkOfParts, partEnds, runChunks, type Chunk, type ChunkPart, type ChunkWriter } from '../chunk-runner';
import { runCopyIn, type CopyIn } from '../cms/copy-in';
import { insertRowsCopy } from '../cms/row-writes';
import { JobInputError } from '../errors';
import { nextTurn } from '../lines';
import type { Processor, ProcessorContext } from '../processor';
import { classify, collapseUpserts, type Classified } from './classify';
import type { importPayload } from './definition';
import type { RowProblem } from './rows';
import { openSource, type Position, type RowSource, type SourceRecord } from './source';
import { claimIdentifiersCopy, findIdentifierProblems, upsertRows } from './writes';

type Payload = z.infer<typeof importPayload>;

/**
 * Where the import is: a position in the file (a resumed run seeks to it) and the counters so far.
 * Advanced in the same transaction as the chunk's writes, so it never disagrees with the table.
 */
export interface ImportCheckpoint {
  /** `validate` reads the whole file writing nothing (onError=abort); `write` writes. */
  phase: 'validate' | 'write';
  at: Position;
  /** CSV column names, once read (the checkpoint is then past the header). */
  header?: string[];
  /** The phase has read the whole file. */
  eof: boolean;
  /** Data rows read in this phase. */
  rows: number;
  /** Invalid rows met in this phase (skipped ones when writing), and their first problems. */
  invalid: number;
  problems: RowProblem[];
  inserted: number;
  updated: number;
  /** Data rows of the file, once a validate pass has counted them. */
  total?: number;
  /**
   * Validate pass: the end-of-pass query over the claims found rows whose identifier cannot be
   * inserted, and `invalid`/`problems` include them; a resumed run fails as this one did, claims
   * table or not.
   */
  identifiersChecked?: boolean;
}

export interface ImportResult {
  inserted: number;
  updated: number;
  skippedCount: number;
  skipped: RowProblem[];
}

const MAX_PROBLEMS = 100;
/** One record (a CSV row with its quoted newlines, an NDJSON line) may not exceed this. */
const MAX_RECORD_BYTES = 32 * 1024 * 1024;
/** A chunk ends early past this many bytes of file, so a few huge rows cannot make a huge chunk. */
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;

const fresh = (phase: ImportCheckpoint['phase']): ImportCheckpoint => ({
  phase,
  at: { byte: 0, line: 0 },
  eof: false,
  rows: 0,
  invalid: 0,
  problems: [],
  inserted: 0,
  updated: 0,
});

/**
 * `cms.import`: streams the uploaded file from the blob store in chunks of rows. Under
 * `onError=abort` a first pass validates the whole file and writes nothing but its identifier
 * claims; if any row is invalid the job fails naming them. The write pass (the only pass under
 * `onError=skip`) writes each chunk's valid rows in one transaction with the checkpoint.
 */
export const importProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, database } = ctx;
  const table = await getCmsTable(database.db, payload.tableId, ctx.teamId);
  if (!table) throw new JobInputError('the CMS table no longer exists', 'not_found');
  let cp: ImportCheckpoint = (run.checkpoint as ImportCheckpoint | null) ?? fresh(payload.onError === 'abort' ? 'validate' : 'write');
  const claiming = payload.mode === 'insert' && (cp.phase === 'validate' || payload.onError === 'skip');
  if (claiming) {
    const { created } = await createClaimsTable(database.db, ctx.jobId, { indexed: payload.onError === 'skip' });
    // The claims of a validate pass under way are gone (dropped when an earlier run's input was
    // refused, by a stale run, by an upgrade): it starts over, or it would miss repeats.
    if (created && cp.phase === 'validate' && cp.rows > 0 && !cp.identifiersChecked) {
      cp = fresh('validate');
      await run.commit({ checkpoint: cp, done: 0, total: null, rows: 0 });
    }
  }
  try {
    if (cp.phase === 'validate') {
      cp = await pass(ctx, table, cp);
      if (payload.mode === 'insert' && !cp.identifiersChecked) {
        // The pass claimed every valid row: one read of the claims finds those that cannot be inserted.
        const found = await findIdentifierProblems(database.pool, ctx.jobId, table.id, MAX_PROBLEMS);
        if (found.count > 0) {
          const problems = [...cp.problems, ...found.problems].sort((a, b) => a.line - b.line).slice(0, MAX_PROBLEMS);
          cp = { ...cp, invalid: cp.invalid + found.count, problems, identifiersChecked: true };
          // Recorded before the job fails: a retry (or a run after a crash here) fails the same way.
          await run.commit({ checkpoint: cp, done: 0, rows: 0 });
        }
      }
      if (cp.invalid > 0) {
        throw new JobInputError(`${cp.invalid} invalid row(s) in the file; nothing was written`, 'validation_failed', cp.problems, cp.invalid);
      }
      const next: ImportCheckpoint = { ...fresh('write'), total: cp.rows };
      await run.commit({ checkpoint: next, done: 0, total: cp.rows, rows: 0 });
      cp = next;
      // Claims cost a fraction of a row write: the write pass sizes its chunks afresh.
      ctx.restartChunkSizing();
    }
    cp = await pass(ctx, table, cp);
  } catch (err) {
    // Bad input ends the job for good: its claims are of no further use.
    if (err instanceof JobInputError && payload.mode === 'insert') await dropClaimsTable(database.db, ctx.jobId).catch(() => {});
    throw err;
  }
  // Also when this run did not claim: an earlier run's validate pass did.
  if (payload.mode === 'insert') await dropClaimsTable(database.db, ctx.jobId);
  // The upload is deleted once the job is recorded completed (runJob), not before: a run that
  // cannot record it leaves the job to a new run, which reads the file again.
  const result: ImportResult = { inserted: cp.inserted, updated: cp.updated, skippedCount: cp.invalid, skipped: cp.problems };
  return result;
};

/** Runs one phase to the end of the file, from its checkpoint. */
async function pass(ctx: ProcessorContext<Payload>, table: CmsTableRow, start: ImportCheckpoint): Promise<ImportCheckpoint> {
  const { payload, run } = ctx;
  // A chunk's plan may be made while the one before commits when it reads nothing that chunk
  // writes: the validate pass (it reads nothing; its claims are read at its end) and the write
  // pass after it under mode=insert (it reads nothing). Not under onError=skip (a chunk
  // reads the claims of the chunks before it) nor mode=upsert (it reads the rows they wrote).
  const planAhead = start.phase === 'validate' || (payload.mode === 'insert' && payload.onError === 'abort');
  let source: RowSource | undefined;
  // The next chunk's records, read (parsed) while this one is checked and committed.
  let ahead: Promise<Taken> | undefined;
  try {
    return await runChunks<ImportCheckpoint>(run, start, async (at) => {
      if (at.eof) return null;
      // Opened at the first chunk (not before: a finished phase never touches the file again).
      source ??= openSource({
        blobs: ctx.blobs,
        blobKey: payload.blobKey,
        format: payload.format,
        fields: table.fields,
        from: at.at,
        header: at.header,
        maxRecordBytes: MAX_RECORD_BYTES,
        // Rows go to COPY as text (insertRowsCopy); upserts build their statement from parsed data.
        trusted: at.phase === 'write' && payload.onError === 'abort' && payload.mode === 'insert',
      });
      const taken = await (ahead ?? takeChunk(source, ctx.chunkSize));
      ahead = undefined;
      if (!taken.eof) {
        ahead = takeChunk(source, ctx.chunkSize);
        // Dropped unread when the run stops here (its error, if any, is the source's and not news).
        ahead.catch(() => {});
      }
      return planChunk(ctx, table, at, taken);
    }, { ahead: () => planAhead && ctx.alone() });
  } finally {
    source?.close();
  }
}

interface Taken {
  records: SourceRecord[];
  eof: boolean;
  /** Just past the last record (the checkpoint of the chunk), and the CSV header. */
  position: Position;
  header: string[] | undefined;
}

/**
 * Records parsed between two turns of the event loop while reading ahead. Parsing a whole chunk
 * in one go kept the loop busy for tens of milliseconds, and a chunk transaction of this process
 * (this run's, or another's) waited that long for its answers, holding its locks.
 */
const PARSE_SLICE = 100;

async function takeChunk(source: RowSource, maxRows: number): Promise<Taken> {
  const records: SourceRecord[] = [];
  let bytes = 0;
  let eof = false;
  while (records.length < maxRows && bytes < MAX_CHUNK_BYTES) {
    if (records.length % PARSE_SLICE === PARSE_SLICE - 1) await nextTurn();
    const r = await source.next();
    if (!r) {
      eof = true;
      break;
    }
    records.push(r);
    bytes += r.bytes;
  }
  return { records, eof, position: source.position, header: source.header };
}

async function planChunk(
  ctx: ProcessorContext<Payload>,
  table: CmsTableRow,
  at: ImportCheckpoint,
  { records, eof, position, header }: Taken,
): Promise<Chunk<ImportCheckpoint>> {
  const { payload, jobId } = ctx;
  const validating = at.phase === 'validate';
  // After a validate pass, the claims cover the whole file: the write pass only writes.
  const checked = validating || payload.onError === 'skip';
  const rows = records.map((r) => r.row);
  const c = await classify(rows, {
    pool: ctx.database.pool,
    jobId,
    tableId: table.id,
    mode: payload.mode,
    identifiers: checked && !validating ? 'file-and-table' : 'none',
  });
  if (!checked && c.invalidRows > 0) {
    // The validate pass found none; the same file read again cannot have any.
    throw new Error(`row ${c.problems[0]?.line} became invalid after the file was validated`);
  }
  if (payload.mode === 'insert') return insertChunk(ctx, table, at, { records, eof, position, header }, c, validating, checked);

  const next: ImportCheckpoint = {
    ...at,
    at: position,
    header,
    eof,
    rows: at.rows + rows.length,
    invalid: at.invalid + c.invalidRows,
    problems: withProblems(at.problems, c.problems),
  };
  // mode=upsert claims nothing: its validate pass only reads.
  if (validating) return { checkpoint: next, done: 0, rows: rows.length };
  const u = collapseUpserts(c.valid, c.existing);
  next.inserted += u.inserted;
  next.updated += u.updated;
  return {
    checkpoint: next,
    done: next.rows,
    total: at.total ?? (eof ? next.rows : undefined),
    rows: rows.length,
    write: async ({ client }) => {
      const got = await upsertRows(client, table, u.writes);
      if (got.inserted !== u.expect.inserted || got.updated !== u.expect.updated) {
        // The table changed between the read and the write: roll the chunk back and plan it again.
        throw new Error(`upsert wrote ${JSON.stringify(got)}, expected ${JSON.stringify(u.expect)}`);
      }
    },
  };
}

function withProblems(before: RowProblem[], more: RowProblem[]): RowProblem[] {
  return before.length < MAX_PROBLEMS && more.length > 0 ? [...before, ...more].slice(0, MAX_PROBLEMS) : before;
}

/**
 * A chunk of `mode=insert` in parts (`Chunk.parts`), each ending after a record: its valid rows
 * (write pass) and their claims (validate pass, and writes under onError=skip), COPY data encoded
 * here, before the transaction begins (see insertRowsCopy). A chunk cut short after a part has its
 * checkpoint just past that part's last record.
 */
async function insertChunk(
  ctx: ProcessorContext<Payload>,
  table: CmsTableRow,
  at: ImportCheckpoint,
  { records, eof, position, header }: Taken,
  c: Classified,
  validating: boolean,
  checked: boolean,
): Promise<Chunk<ImportCheckpoint>> {
  const parts: ChunkPart<ImportCheckpoint>[] = [];
  // The same COPY data, for writing the chunk whole: one statement for its rows, one for its claims.
  const inserts: CopyIn[] = [];
  const claimsAll: CopyIn[] = [];
  let from = 0;
  let valid = 0;
  let claimed = 0;
  let problems = 0;
  let invalid = 0;
  for (const to of partEnds(records.length)) {
    const last = to === records.length;
    const lastLine = records[to - 1]?.row.line ?? Number.POSITIVE_INFINITY;
    for (let i = from; i < to; i++) if (records[i]!.row.problems.length > 0) invalid++;
    const validEnd = last ? c.valid.length : upTo(c.valid, valid, lastLine);
    const claimsEnd = last ? c.claims.length : upTo(c.claims, claimed, lastLine);
    const problemsEnd = last ? c.problems.length : upTo(c.problems, problems, lastLine);
    const claims = checked ? claimIdentifiersCopy(ctx.jobId, c.claims.slice(claimed, claimsEnd)) : null;
    const insert = !validating && validEnd > valid ? await insertRowsCopy(table, c.valid.slice(valid, validEnd)) : null;
    const checkpoint: ImportCheckpoint = {
      ...at,
      at: last ? position : records[to - 1]!.end,
      header,
      eof: last && eof,
      rows: at.rows + to,
      invalid: at.invalid + invalid,
      problems: withProblems(at.problems, c.problems.slice(0, problemsEnd)),
      inserted: at.inserted + (validating ? 0 : validEnd),
    };
    parts.push({
      end: {
        checkpoint,
        done: validating ? 0 : checkpoint.rows,
        total: validating ? undefined : (at.total ?? (checkpoint.eof ? checkpoint.rows : undefined)),
        rows: to,
      },
      write: (w) => writeCopies(w, insert ? [insert] : [], claims ? [claims] : []),
    });
    if (insert) inserts.push(insert);
    if (claims) claimsAll.push(claims);
    from = to;
    valid = validEnd;
    claimed = claimsEnd;
    problems = problemsEnd;
  }
  // Nothing to write (a validate pass under mode=insert with no valid row): a checkpoint-only chunk
  // (partEnds gives at least one part, an empty one for no records).
  if (validating && c.claims.length === 0) return parts[parts.length - 1]!.end;
  return chunkOfParts(parts, (w) => writeCopies(w, inserts, claimsAll), true);
}

/**
 * Inserts the rows, then their claims; each COPY must store every row it was given. The first
 * COPY sent opens the chunk's transaction (`Chunk.opensWithCopy`).
 */
async function writeCopies(w: ChunkWriter, inserts: CopyIn[], claims: CopyIn[]): Promise<void> {
  const rows = inserts.reduce((n, c) => n + c.rows, 0);
  const n = await runCopyIn(w.client, inserts, w);
  if (n !== rows) throw new Error(`inserted ${n} of ${rows} rows`);
  const claimed = claims.reduce((k, c) => k + c.rows, 0);
  const k = await runCopyIn(w.client, claims, w);
  if (k !== claimed) throw new Error(`claimed ${k} of ${claimed} identifiers`);
}

/** The index past the last item from `from` on whose line is at most `line` (items in line order). */
function upTo(items: readonly { line: number }[], from: number, line: number): number {
  let i = from;
  while (i < items.length && items[i]!.line <= line) i++;
  return i;
}

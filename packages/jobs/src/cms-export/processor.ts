import { Readable } from 'node:stream';
import type pg from 'pg';
import type { z } from 'zod';
import { countExportRows, exportBounds, exportPageCopySql, getCmsTable, idCuts, serverIsUtf8, type ExportFilter, type ExportPage } from '@platform/db';
import type { BlobStore } from '../blob-store';
import { runChunks, type Chunk, type JobRun } from '../chunk-runner';
import { JobInputError } from '../errors';
import type { Processor } from '../processor';
import { exportPieceKey, type ExportResult, type exportPayload } from './definition';
import { BufferPool } from '../buffer-pool';
import { CopyRecords, OUT_SIZE } from './copy-records';
import { csvHeader } from './format';

type Payload = z.infer<typeof exportPayload>;
type Format = Payload['format'];

/** The bytes one run wrote into its own part file of a range, as committed. */
interface Segment {
  lease: number;
  bytes: number;
}

/** A span of row ids, read in keyset pages into part files of its own. */
interface Range {
  /** The range's last row id (inclusive); null for the last range. */
  upTo: string | null;
  /** Keyset cursor: the last row id written, or before the first page the range's (exclusive) start. */
  lastId: string | null;
  rows: number;
  /** Every row of the range is written. */
  done: boolean;
  /** The range's bytes, in order: a prefix of each listed run's part file. */
  segments: Segment[];
  /**
   * The number in its part files' names: given when a range is split off another (see
   * `splitRanges`), and kept as ranges are inserted before it. Absent: its place in the list.
   */
  part?: number;
}

interface Checkpoint {
  /** `finalize` once every page is committed: what is left is building the file. */
  phase: 'pages' | 'finalize';
  /** Committed bytes of the whole file, over all ranges. */
  bytes: number;
  rows: number;
  /**
   * Rows the export covered when it started (more may be written if rows were added since); null
   * until the first chunk, which counts them while it reads its pages.
   */
  total: number | null;
  /** In id order: the file is their bytes one after the other. */
  ranges: Range[];
}

/** The checkpoint of an export started before ranges: one cursor and one list of segments. */
interface OneRangeCheckpoint {
  phase: 'pages' | 'finalize';
  lastId: string | null;
  bytes: number;
  rows: number;
  total: number;
  segments: Segment[];
}

/** A checkpoint as this code reads it, whichever version wrote it. */
function current(cp: Checkpoint | OneRangeCheckpoint): Checkpoint {
  if ('ranges' in cp) return cp;
  const { phase, lastId, bytes, rows, total, segments } = cp;
  return { phase, bytes, rows, total, ranges: [{ upTo: null, lastId, rows, done: phase === 'finalize', segments }] };
}

export const exportBlobKey = (jobId: string, format: Format) => `exports/${jobId}.${format}`;
/**
 * Each run (lease) writes part files of its own, one per range: a stale run that wakes up can only
 * touch its own. (Range 0 keeps the name part files had before ranges.)
 */
const partKey = (jobId: string, range: number, lease: number) =>
  range === 0 ? `exports/parts/${jobId}.${lease}.part` : `exports/parts/${jobId}.${lease}.r${range}.part`;
const partOf = (r: Range, i: number) => r.part ?? i;

/**
 * `cms.export`: keyset pages of the table, each a `COPY … TO STDOUT` that PostgreSQL formats as
 * the export's own CSV or NDJSON (reads outside any transaction, on the replica when one is
 * configured), streamed into part files, with one checkpoint-only chunk per `pageChunkMs` of
 * pages. The rows are cut into `pageReaders` ranges of ids; while the export has its worker to
 * itself, the ranges are read side by side (one connection each), otherwise one after the other.
 * Side by side, a range that ends early ends the chunk, and the next one splits what is left of
 * another range so that no reader waits (`splitRanges`).
 * A part file is written before the checkpoint that names its length is committed; bytes past
 * that length (a crash between the two) are ignored by the next run, which writes its own part
 * files from the committed rows on. At the end the committed prefixes, range after range, become
 * the pieces of `exports/<jobId>.<format>` (see `finalize`).
 */
export const exportProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, blobs, jobId, teamId } = ctx;
  const table = await getCmsTable(ctx.database.db, payload.tableId, teamId);
  if (!table) throw new JobInputError('the CMS table no longer exists', 'not_found');
  const reader = ctx.replicaDatabase ?? ctx.database;
  const filter: ExportFilter = { tableId: table.id, teamId, published: payload.published };
  const finalKey = exportBlobKey(jobId, payload.format);

  let cp = run.checkpoint ? current(run.checkpoint as Checkpoint | OneRangeCheckpoint) : null;
  if (cp && !(await resumable(blobs, jobId, finalKey, cp))) {
    // The blob store lost a part file (another disk, a cleanup): the checkpoint names bytes that
    // are gone, so the only exact export left is a new one.
    ctx.log.warn({ jobId, bytes: cp.bytes, rows: cp.rows }, 'export part file missing; starting the export over');
    cp = null;
  }
  if (!cp) {
    const bounds = await exportBounds(reader.db, filter, ctx.pageReaders * ctx.pageRows);
    // Ranges only for what fills at least a page each: a small table is read in one.
    const parts = Math.max(1, Math.min(ctx.pageReaders, Math.floor(bounds.some / ctx.pageRows)));
    const cuts = bounds.first && bounds.last ? idCuts(bounds.first, bounds.last, parts) : [];
    const ranges = [null, ...cuts].map((start, i): Range => ({ upTo: cuts[i] ?? null, lastId: start, rows: 0, done: false, segments: [] }));
    cp = { phase: 'pages', bytes: 0, rows: 0, total: null, ranges };
    await run.commit({ checkpoint: cp, done: 0, total: null, rows: 0 });
  }
  if (cp.phase === 'pages') {
    const count = () => countExportRows(reader.db, filter);
    const page = { ...filter, fields: table.fields, format: payload.format, limit: ctx.pageRows, utf8Server: await serverIsUtf8(reader.db) };
    // A range is split while what is left of it holds two pages or more.
    const least = 2 * ctx.pageRows;
    const split = (ranges: Range[]) => splitRanges(ranges, ctx.pageReaders, least, (within) => exportBounds(reader.db, filter, least, within));
    const planner = pagePlanner(run, blobs, reader.pool, page, ctx.pageChunkMs, ctx.pageReaders, () => ctx.alone(), count, split);
    const paged = await runChunks<Checkpoint>(run, cp, planner);
    // Committing the end of the pages fences out a stale run before it could build the file.
    cp = { ...paged, phase: 'finalize', total: Math.max(paged.total ?? 0, paged.rows) };
    await run.commit({ checkpoint: cp, done: cp.rows, total: cp.total, rows: 0 });
  }
  const pieces = await finalize(blobs, jobId, run.lease, finalKey, cp, ctx.pageReaders);
  const result: ExportResult = { blobKey: finalKey, format: payload.format, rows: cp.rows, bytes: cp.bytes };
  return pieces.length > 1 ? { ...result, pieces } : result;
};

function pagePlanner(
  run: JobRun<Checkpoint>,
  blobs: BlobStore,
  reader: pg.Pool,
  page: ExportPage,
  chunkMs: number,
  readers: number,
  sideBySide: () => boolean,
  count: () => Promise<number>,
  split: (ranges: Range[]) => Promise<Range[]>,
): (cp: Checkpoint) => Promise<Chunk<Checkpoint> | null> {
  // One pool for the run's readers: a piece goes back once written, whichever range it was.
  const buffers = new BufferPool(OUT_SIZE);
  /**
   * Pages of range `i` one after the other for up to `chunkMs` (at least one) or until `stop.now`
   * (another range read side by side has ended), streamed to this run's part file of the range at
   * its committed length, cutting off anything after it.
   */
  const readRange = async (i: number, range: Range, header: Buffer | undefined, stop: { now: boolean }) => {
    const last = range.segments.at(-1);
    const own = last?.lease === run.lease ? last : undefined;
    const offset = own?.bytes ?? 0;
    let rows = 0;
    let lastId = range.lastId;
    let done = false;
    const started = performance.now();
    async function* pages(): AsyncGenerator<Buffer> {
      if (header) yield header;
      do {
        const records = new CopyRecords(exportPageCopySql({ ...page, afterId: lastId, upTo: range.upTo }), page.format, buffers);
        yield* copyOut(reader, records, buffers);
        rows += records.rows;
        lastId = records.lastId ?? lastId;
        done = records.rows < page.limit;
      } while (!done && !stop.now && performance.now() - started < chunkMs);
      if (done) stop.now = true;
    }
    const { size } = await blobs.writeAt(partKey(run.jobId, partOf(range, i), run.lease), offset, pages());
    const segments = size > offset ? [...(own ? range.segments.slice(0, -1) : range.segments), { lease: run.lease, bytes: size }] : range.segments;
    return { range: { ...range, lastId, rows: range.rows + rows, done, segments }, rows, written: size - offset };
  };

  return async (before) => {
    // Beside other jobs of its process, one range at a time: the one connection its slot stands for.
    const alone = sideBySide();
    const cp = alone ? { ...before, ranges: await split(before.ranges) } : before;
    const open = cp.ranges.flatMap((r, i) => (r.done ? [] : [i]));
    if (open.length === 0) return null;
    const now = open.slice(0, alone ? readers : 1);
    const stop = { now: false };
    // The first chunk counts the rows (progress.total): beside its pages when the export is alone
    // (the count takes as long as a few pages of a large table), before them otherwise.
    const counting = cp.total !== null ? Promise.resolve(cp.total) : alone ? count() : Promise.resolve(await count());
    // The CSV header goes first in range 0's part file, with its first page (alone, for an empty table).
    const header = cp.bytes === 0 && page.format === 'csv' ? Buffer.from(csvHeader(page.fields), 'utf8') : undefined;
    // Every read and the count settle before the chunk ends, failed or not: none is left running.
    const [settled, counted] = await Promise.all([
      Promise.allSettled(now.map((i) => readRange(i, cp.ranges[i]!, i === 0 ? header : undefined, stop))),
      counting.then((n) => ({ n }), (error: unknown) => ({ error })),
    ]);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if ('error' in counted) throw counted.error;
    const ranges = [...cp.ranges];
    let rows = 0;
    let written = 0;
    settled.forEach((r, k) => {
      if (r.status !== 'fulfilled') return;
      ranges[now[k]!] = r.value.range;
      rows += r.value.rows;
      written += r.value.written;
    });
    const done = cp.rows + rows;
    const total = Math.max(counted.n, done);
    return { checkpoint: { phase: 'pages', bytes: cp.bytes + written, rows: done, total, ranges }, done, total, rows };
  };
}

/**
 * The output of one COPY … TO STDOUT (`records`) as the export's bytes, each piece's buffer handed
 * back to `buffers` once the next piece is asked for.
 * The connection is held only while the page streams; one left mid-COPY (the writer failed) is
 * closed, not reused.
 */
async function* copyOut(pool: pg.Pool, records: CopyRecords, buffers: BufferPool): AsyncGenerator<Buffer> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    client.query(records.submittable());
    for await (const chunk of records as AsyncIterable<Buffer>) {
      yield chunk;
      // Asked for the next piece: the writer is done with this one (BlobStore.writeAt).
      buffers.give(chunk);
    }
  } catch (err) {
    failure = err as Error;
    throw err;
  } finally {
    if (!failure && !records.readableEnded) failure = new Error('the export page was not read to its end');
    if (failure) records.destroy();
    client.release(failure);
  }
}

/**
 * The ranges with, while fewer than `readers` are still open, open ones split in two (at the
 * middle of their remaining ids, as `idCuts` spreads them) so that every reader has one: readers
 * seldom go at one pace, and one left reading alone at the end reads at half the speed. A range
 * is split only when what is left of it holds at least `least` rows (`bounds` counts up to that).
 * The ranges stay in id order; each keeps its part number, and the new one takes the next.
 */
async function splitRanges(
  ranges: Range[],
  readers: number,
  least: number,
  bounds: (within: { afterId: string | null; upTo: string | null }) => Promise<{ first: string | null; last: string | null; some: number }>,
): Promise<Range[]> {
  let open = ranges.filter((r) => !r.done).length;
  if (open === 0 || open >= readers) return ranges;
  const out = ranges.map((r, i) => ({ ...r, part: partOf(r, i) }));
  for (let i = 0; i < out.length && open < readers; i++) {
    const r = out[i]!;
    if (r.done) continue;
    const left = await bounds({ afterId: r.lastId, upTo: r.upTo });
    if (left.some < least || !left.first || !left.last) continue;
    const [cut] = idCuts(left.first, left.last, 2);
    if (!cut) continue;
    out.splice(i, 1, { ...r, upTo: cut }, { upTo: r.upTo, lastId: cut, rows: 0, done: false, segments: [], part: out.length });
    open++;
    i++;
  }
  return out;
}

/** Every committed part of the file, in order: range after range, segment after segment. */
function committedParts(jobId: string, cp: Checkpoint): { key: string; bytes: number; lease: number }[] {
  return cp.ranges.flatMap((r, i) => r.segments.filter((s) => s.bytes > 0).map((s) => ({ key: partKey(jobId, partOf(r, i), s.lease), bytes: s.bytes, lease: s.lease })));
}

/** True when what the checkpoint names is still there: each part's committed prefix, or the piece it became. */
async function resumable(blobs: BlobStore, jobId: string, finalKey: string, cp: Checkpoint): Promise<boolean> {
  const parts = committedParts(jobId, cp);
  for (const [n, p] of parts.entries()) {
    const there = cp.phase === 'finalize' && (await blobs.size(exportPieceKey(finalKey, n))) === p.bytes;
    if (!there && ((await blobs.size(p.key)) ?? -1) < p.bytes) return false;
  }
  return true;
}

/**
 * Makes the committed parts the export's file, in pieces: part n becomes `exportPieceKey(finalKey,
 * n)`, cut to its committed length. This run's own parts are renamed, in one step (no stale run
 * writes to them: its pages are over); another run's part is copied, as that run may still be
 * writing past its committed length. Every run's part files are removed. Idempotent: a run that
 * crashed half-way through finds the pieces made so far, and makes the others. Answers the
 * pieces' sizes.
 */
async function finalize(blobs: BlobStore, jobId: string, lease: number, finalKey: string, cp: Checkpoint, readers: number): Promise<number[]> {
  const parts = committedParts(jobId, cp);
  if (parts.length === 0) {
    // Nothing was written (NDJSON of an empty table): an empty file.
    if ((await blobs.size(finalKey)) !== 0) await blobs.put(finalKey, Buffer.alloc(0));
    return [0];
  }
  for (const [n, p] of parts.entries()) {
    const key = exportPieceKey(finalKey, n);
    if ((await blobs.size(p.key)) === undefined) {
      if ((await blobs.size(key)) !== p.bytes) throw new Error(`export part ${p.key} is gone and piece ${key} is not whole`);
      continue;
    }
    if (p.lease === lease) {
      await blobs.writeAt(p.key, p.bytes, Buffer.alloc(0));
      await blobs.move(p.key, key);
    } else {
      await blobs.put(key, Readable.from(blobs.get(p.key, { start: 0, end: p.bytes }) as AsyncIterable<Buffer>));
    }
  }
  // Runs that committed nothing (killed on their first page) left part files the checkpoint does
  // not name, and so did a run killed in a chunk that split ranges: up to `readers - 1` numbers
  // past those the checkpoint names.
  for (let i = 0; i < cp.ranges.length + readers - 1; i++) {
    for (let l = 1; l <= lease; l++) await blobs.delete(partKey(jobId, i, l));
  }
  return parts.map((p) => p.bytes);
}

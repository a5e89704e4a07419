import { Readable } from 'node:stream';
import type pg from 'pg';
import type { z } from 'zod';
import { countExportRows, exportPageCopySql, getCmsTable, type CmsField, type ExportFilter } from '@platform/db';
import type { BlobStore } from '../blob-store';
import { runChunks, type Chunk, type JobRun } from '../chunk-runner';
import { JobInputError } from '../errors';
import type { Processor } from '../processor';
import type { exportPayload } from './definition';
import { CopyRecords } from './copy-records';
import { csvHeader } from './format';

type Payload = z.infer<typeof exportPayload>;
type Format = Payload['format'];

/** The bytes one run wrote into its own part file, as committed. */
interface Segment {
  lease: number;
  bytes: number;
}

interface Checkpoint {
  /** `finalize` once every page is committed: what is left is building the file. */
  phase: 'pages' | 'finalize';
  /** Id of the last row written (keyset cursor). */
  lastId: string | null;
  /** Committed bytes of the whole file, over all segments. */
  bytes: number;
  rows: number;
  /** Rows the export covered when it started (more may be written if rows were added since). */
  total: number;
  /** The file, in order: a prefix of each listed run's part file. */
  segments: Segment[];
}

export const exportBlobKey = (jobId: string, format: Format) => `exports/${jobId}.${format}`;
/** Each run (lease) writes its own part file: a stale run that wakes up can only touch its own. */
const partKey = (jobId: string, lease: number) => `exports/parts/${jobId}.${lease}.part`;

/**
 * `cms.export`: keyset pages of the table, each a `COPY … TO STDOUT` that PostgreSQL formats as
 * the export's own CSV or NDJSON (reads outside any transaction, on the replica when one is
 * configured), streamed into a part file, one checkpoint-only chunk per `pageChunkMs` of pages. The part file is
 * written before the checkpoint that names its length is committed; bytes past that length (a
 * crash between the two) are ignored by the next run, which writes its own part file from the
 * committed row on. At the end the committed prefixes become `exports/<jobId>.<format>`.
 */
export const exportProcessor: Processor<Payload> = async (ctx) => {
  const { payload, run, blobs, jobId, teamId } = ctx;
  const table = await getCmsTable(ctx.database.db, payload.tableId, teamId);
  if (!table) throw new JobInputError('the CMS table no longer exists', 'not_found');
  const reader = (ctx.replicaDatabase ?? ctx.database).pool;
  const filter: ExportFilter = { tableId: table.id, teamId, published: payload.published };
  const finalKey = exportBlobKey(jobId, payload.format);

  let cp = run.checkpoint as Checkpoint | null;
  if (cp && !(await resumable(blobs, jobId, finalKey, cp))) {
    // The blob store lost a part file (another disk, a cleanup): the checkpoint names bytes that
    // are gone, so the only exact export left is a new one.
    ctx.log.warn({ jobId, bytes: cp.bytes, rows: cp.rows }, 'export part file missing; starting the export over');
    cp = null;
  }
  if (!cp) {
    cp = { phase: 'pages', lastId: null, bytes: 0, rows: 0, total: await countExportRows((ctx.replicaDatabase ?? ctx.database).db, filter), segments: [] };
    await run.commit({ checkpoint: cp, done: 0, total: cp.total, rows: 0 });
  }
  if (cp.phase === 'pages') {
    const paged = await runChunks<Checkpoint>(run, cp, pagePlanner(run, blobs, reader, filter, table.fields, payload.format, ctx.pageRows, ctx.pageChunkMs));
    // Committing the end of the pages fences out a stale run before it could build the file.
    cp = { ...paged, phase: 'finalize' };
    await run.commit({ checkpoint: cp, done: cp.rows, total: cp.total, rows: 0 });
  }
  await finalize(blobs, jobId, run.lease, finalKey, cp);
  return { blobKey: finalKey, format: payload.format, rows: cp.rows, bytes: cp.bytes };
};

function pagePlanner(
  run: JobRun<Checkpoint>,
  blobs: BlobStore,
  reader: pg.Pool,
  filter: ExportFilter,
  fields: readonly CmsField[],
  format: Format,
  pageRows: number,
  chunkMs: number,
): (cp: Checkpoint) => Promise<Chunk<Checkpoint> | null> {
  let exhausted = false;
  return async (cp) => {
    if (exhausted) return null;
    // The CSV header goes with the first page (alone, for an empty table).
    const header = cp.bytes === 0 && format === 'csv' ? Buffer.from(csvHeader(fields), 'utf8') : undefined;
    const last = cp.segments.at(-1);
    const own = last?.lease === run.lease ? last : undefined;
    const offset = own?.bytes ?? 0;
    let rows = 0;
    let lastId = cp.lastId;
    // Pages one after the other for up to `chunkMs` (at least one), streamed to this run's part file at its
    // committed length (cutting off anything after it): one sync and one checkpoint for them all.
    const started = performance.now();
    async function* pages(): AsyncGenerator<Buffer> {
      if (header) yield header;
      do {
        const records = new CopyRecords(exportPageCopySql({ ...filter, fields, format, limit: pageRows, afterId: lastId }), format);
        yield* copyOut(reader, records);
        rows += records.rows;
        lastId = records.lastId ?? lastId;
        exhausted = records.rows < pageRows;
      } while (!exhausted && performance.now() - started < chunkMs);
    }
    const { size } = await blobs.writeAt(partKey(run.jobId, run.lease), offset, pages());
    if (rows === 0 && !header) return null;
    const written = size - offset;
    const done = cp.rows + rows;
    const total = Math.max(cp.total, done);
    return {
      checkpoint: {
        phase: 'pages',
        lastId,
        bytes: cp.bytes + written,
        rows: done,
        total,
        segments: [...(own ? cp.segments.slice(0, -1) : cp.segments), { lease: run.lease, bytes: size }],
      },
      done,
      total,
      rows,
    };
  };
}

/**
 * The output of one COPY … TO STDOUT (`records`) as the export's bytes.
 * The connection is held only while the page streams; one left mid-COPY (the writer failed) is
 * closed, not reused.
 */
async function* copyOut(pool: pg.Pool, records: CopyRecords): AsyncGenerator<Buffer> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    client.query(records.submittable());
    for await (const chunk of records as AsyncIterable<Buffer>) yield chunk;
  } catch (err) {
    failure = err as Error;
    throw err;
  } finally {
    if (!failure && !records.readableEnded) failure = new Error('the export page was not read to its end');
    if (failure) records.destroy();
    client.release(failure);
  }
}

/** True when what the checkpoint names is still there: every part's committed prefix, or the finished file. */
async function resumable(blobs: BlobStore, jobId: string, finalKey: string, cp: Checkpoint): Promise<boolean> {
  if (cp.phase === 'finalize' && (await blobs.size(finalKey)) === cp.bytes) return true;
  for (const s of cp.segments) {
    if (((await blobs.size(partKey(jobId, s.lease))) ?? -1) < s.bytes) return false;
  }
  return true;
}

/**
 * Builds `exports/<jobId>.<format>` from the committed prefixes, atomically (a rename, or a copy
 * to a temporary blob then a rename), and removes every run's part file. Idempotent: a run that
 * crashed half-way through finds the file already built, or builds it again.
 */
async function finalize(blobs: BlobStore, jobId: string, lease: number, finalKey: string, cp: Checkpoint): Promise<void> {
  if ((await blobs.size(finalKey)) !== cp.bytes) {
    const only = cp.segments.length === 1 ? cp.segments[0]! : undefined;
    if (only && (await blobs.size(partKey(jobId, only.lease))) === only.bytes) {
      // The usual case, no crash: one part file holding exactly the committed bytes.
      await blobs.move(partKey(jobId, only.lease), finalKey);
    } else {
      await blobs.put(finalKey, Readable.from(concatParts(blobs, jobId, cp.segments)));
    }
  }
  // Runs that committed nothing (killed on their first page) left part files the checkpoint does not name.
  for (let l = 1; l <= lease; l++) await blobs.delete(partKey(jobId, l));
}

async function* concatParts(blobs: BlobStore, jobId: string, segments: readonly Segment[]): AsyncGenerator<Buffer> {
  for (const s of segments) {
    if (s.bytes > 0) yield* blobs.get(partKey(jobId, s.lease), { start: 0, end: s.bytes }) as AsyncIterable<Buffer>;
  }
}

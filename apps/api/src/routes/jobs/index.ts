import type { ServerResponse } from 'node:http';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { and, desc, eq, sql } from 'drizzle-orm';
import {
  failUnqueued,
  getJob,
  JOB_STATUSES,
  jobs,
  requestCancel,
  requeueJob,
  UUID_RE,
  type Db,
  type JobStatus,
} from '@platform/db';
import { bullJobId, exportPieces, JOB_NAMES, jobDefinition, type ExportResult } from '@platform/jobs';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';
import { decodeCursor, encodeCursor, presentJob } from '../../present';

const jobParams = z.object({ id: z.string() });

/** The client of a download went away (its socket closed or refused a write). */
class ClientGone extends Error {}

/**
 * Resolves once the socket has taken `buf` (its memory may be reused then); rejects with
 * ClientGone when the client went away first. Both ways: with Node 20, a write issued from the
 * callback of the one before, still waiting when the client left, never called back ('close'
 * came); with a read in between, as here, the callback comes and the next write fails.
 */
function writeOut(res: ServerResponse, buf: Buffer): Promise<void> {
  if (res.destroyed) return Promise.reject(new ClientGone('the client went away'));
  return new Promise((resolve, reject) => {
    const gone = () => reject(new ClientGone('the client went away'));
    res.once('close', gone);
    res.write(buf, (err) => {
      res.off('close', gone);
      if (err) reject(new ClientGone(err.message));
      else resolve();
    });
  });
}

/** The cursor's time, as this API writes it (microseconds, UTC); Postgres parses it as is. */
const ISO_UTC_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;
// A real calendar time: JS would roll 2024-02-30 over to March, Postgres refuses it (a 500).
const isIsoUtc = (t: string) => ISO_UTC_RE.test(t) && !Number.isNaN(Date.parse(t)) && new Date(t).toISOString().slice(0, 19) === t.slice(0, 19);
const isJobCursor = (v: unknown): v is { t: string; id: string } =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as { t?: unknown }).t === 'string' &&
  isIsoUtc((v as { t: string }).t) &&
  typeof (v as { id?: unknown }).id === 'string' &&
  UUID_RE.test((v as { id: string }).id);

/**
 * A keyset page of a team's jobs, newest first. Unlike `listJobs` of @platform/db, the cursor keeps
 * `created_at` to the microsecond, as Postgres stores it: a JS Date keeps milliseconds, so a cursor
 * made from one skipped every job created in the same millisecond as the page's last one.
 * (This belongs in packages/db/src/queries/jobs.ts; it lives here until that file takes it.)
 */
async function listTeamJobs(
  db: Db,
  f: { teamId: string; status?: JobStatus; type?: string; limit: number; after?: { t: string; id: string } },
) {
  const conds = [eq(jobs.teamId, f.teamId)];
  if (f.status) conds.push(eq(jobs.status, f.status));
  if (f.type) conds.push(eq(jobs.type, f.type));
  if (f.after) conds.push(sql`(${jobs.createdAt}, ${jobs.id}) < (${f.after.t}::timestamptz, ${f.after.id}::uuid)`);
  return db
    .select({
      job: jobs,
      createdAtExact: sql<string>`to_char(${jobs.createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`,
    })
    .from(jobs)
    .where(and(...conds))
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(f.limit);
}

export const jobRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));

  const ownJob = async (teamId: string, id: string) => {
    const job = UUID_RE.test(id) ? await getJob(db, id, teamId) : undefined;
    if (!job) throw notFound('job');
    return job;
  };

  app.get('/v1/jobs/:id', { schema: { tags: ['jobs'], params: jobParams } }, async (req) =>
    presentJob(await ownJob(req.teamId, req.params.id)),
  );

  app.get(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        querystring: z.object({
          status: z.enum(JOB_STATUSES).optional(),
          type: z.enum(JOB_NAMES as [string, ...string[]]).optional(),
          limit: z.coerce.number().int().min(1).max(500).default(50),
          cursor: z.string().max(300).optional(),
        }),
      },
    },
    async (req) => {
      const after = req.query.cursor ? decodeCursor(req.query.cursor, isJobCursor) : undefined;
      if (req.query.cursor && !after) throw new AppError('validation_failed', 'the cursor is not one this API gave out');
      const rows = await listTeamJobs(db, {
        teamId: req.teamId,
        status: req.query.status,
        type: req.query.type,
        limit: req.query.limit + 1,
        after,
      });
      const page = rows.slice(0, req.query.limit);
      const last = page[page.length - 1];
      return {
        jobs: page.map((r) => presentJob(r.job)),
        nextCursor: rows.length > req.query.limit && last ? encodeCursor({ t: last.createdAtExact, id: last.job.id }) : null,
      };
    },
  );

  app.post('/v1/jobs/:id/cancel', { schema: { tags: ['jobs'], params: jobParams } }, async (req, reply) => {
    const job = await ownJob(req.teamId, req.params.id);
    const updated = await requestCancel(db, job.id, req.teamId);
    if (!updated) throw new AppError('conflict', `the job already ended (${job.status})`);
    if (updated.status === 'cancelled') {
      // Best effort: the worker skips a cancelled row anyway, this only tidies Redis.
      const def = jobDefinition(updated.type);
      if (def) await deps.producer.queue(def.queue).remove(bullJobId(updated.id, updated.dispatches)).catch(() => {});
    }
    return reply.status(202).send(presentJob(updated));
  });

  app.post('/v1/jobs/:id/retry', { schema: { tags: ['jobs'], params: jobParams } }, async (req, reply) => {
    const job = await ownJob(req.teamId, req.params.id);
    const queued = await requeueJob(db, job.id, req.teamId);
    if (!queued) throw new AppError('conflict', `only a failed or cancelled job can be retried (this one is ${job.status})`);
    try {
      await deps.producer.dispatch(queued);
    } catch (err) {
      await failUnqueued(db, queued.id, { code: 'dependency_unavailable', message: 'the retry could not be queued' });
      req.log.warn({ err: String(err) }, 'retry enqueue failed');
      throw new AppError('dependency_unavailable', 'the job queue (Redis) does not answer; try again shortly');
    }
    return reply.status(202).header('location', `/v1/jobs/${queued.id}`).send(presentJob(queued));
  });

  app.get('/v1/jobs/:id/download', { schema: { tags: ['jobs'], params: jobParams } }, async (req, reply) => {
    const job = await ownJob(req.teamId, req.params.id);
    if (job.type !== 'cms.export') throw new AppError('conflict', 'only an export job has a file to download');
    if (job.status !== 'completed') throw new AppError('conflict', `the export has not completed (it is ${job.status})`);
    const result = job.result as Partial<ExportResult> | null;
    const pieces = result?.blobKey && typeof result.bytes === 'number' ? exportPieces({ blobKey: result.blobKey, bytes: result.bytes, pieces: result.pieces }) : [];
    const sizes = await Promise.all(pieces.map((p) => deps.blobs.size(p.key)));
    if (pieces.length === 0 || sizes.some((size, i) => size !== pieces[i]!.bytes)) throw new AppError('not_found', 'the exported file has expired and was deleted');
    const format = result?.format === 'csv' ? 'csv' : 'ndjson';
    const blobs = deps.blobs;
    // The first piece is opened and read before the status line: a file deleted by now is still a 404.
    const first = blobs.read(pieces[0]!.key)[Symbol.asyncIterator]();
    let head: IteratorResult<Buffer>;
    try {
      head = await first.next();
    } catch (err) {
      req.log.warn({ err: String(err), jobId: job.id }, 'export file could not be opened');
      throw new AppError('not_found', 'the exported file has expired and was deleted');
    }
    // Written to the socket by hand: each piece is read into one reused buffer (BlobStore.read),
    // which may be read into again only once the socket has taken it. onResponse hooks still run.
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson',
      'content-length': pieces.reduce((a, p) => a + p.bytes, 0),
      'content-disposition': `attachment; filename="export-${job.id}.${format}"`,
    });
    try {
      if (req.method !== 'HEAD') {
        // A file kept in pieces (one per range of rows the export read side by side) is sent as one.
        for (let r = head; !r.done; r = await first.next()) await writeOut(res, r.value);
        for (const p of pieces.slice(1)) for await (const buf of blobs.read(p.key)) await writeOut(res, buf);
      }
      res.end();
    } catch (err) {
      // The status line is sent: cutting the connection short is what tells the client.
      if (err instanceof ClientGone) req.log.info({ jobId: job.id }, 'download left by the client');
      else req.log.warn({ err: String(err), jobId: job.id }, 'download cut short: the file could not be read');
      res.destroy();
    } finally {
      // Gives the first piece's buffer back and closes its file, however the loop ended.
      await first.return?.();
    }
  });
};

import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  failUnqueued,
  getJob,
  JOB_STATUSES,
  listJobs,
  requestCancel,
  requeueJob,
  UUID_RE,
} from '@platform/db';
import { bullJobId, JOB_NAMES, jobDefinition } from '@platform/jobs';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';
import { decodeCursor, encodeCursor, presentJob } from '../../present';

const jobParams = z.object({ id: z.string() });
const isJobCursor = (v: unknown): v is { t: string; id: string } =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as { t?: unknown }).t === 'string' &&
  !Number.isNaN(Date.parse((v as { t: string }).t)) &&
  typeof (v as { id?: unknown }).id === 'string' &&
  UUID_RE.test((v as { id: string }).id);

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
      const rows = await listJobs(db, {
        teamId: req.teamId,
        status: req.query.status,
        type: req.query.type,
        limit: req.query.limit + 1,
        after: after ? { createdAt: new Date(after.t), id: after.id } : undefined,
      });
      const page = rows.slice(0, req.query.limit);
      const last = page[page.length - 1];
      return {
        jobs: page.map(presentJob),
        nextCursor: rows.length > req.query.limit && last ? encodeCursor({ t: last.createdAt.toISOString(), id: last.id }) : null,
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
    const result = job.result as { blobKey?: string; format?: string } | null;
    const size = result?.blobKey ? await deps.blobs.size(result.blobKey) : undefined;
    if (!result?.blobKey || size === undefined) throw new AppError('not_found', 'the exported file has expired and was deleted');
    const format = result.format === 'csv' ? 'csv' : 'ndjson';
    return reply
      .header('content-type', format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
      .header('content-length', size)
      .header('content-disposition', `attachment; filename="export-${job.id}.${format}"`)
      .send(deps.blobs.get(result.blobKey));
  });
};

import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { getCmsTable, UUID_RE } from '@platform/db';
import { acceptDeps, acceptJob, fingerprint } from '../../accept-job';
import type { ApiDeps } from '../../deps';
import { notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';

const exportBody = z
  .object({
    format: z.enum(['csv', 'ndjson']),
    /** Live `data` of the rows that have it, instead of every row's draft. */
    published: z.boolean().default(false),
  })
  .strict();

/** `POST /v1/cms-tables/:tableId/exports`: a `cms.export` job; the file is fetched from `GET /v1/jobs/:id/download`. */
export const exportRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));

  app.post(
    '/v1/cms-tables/:tableId/exports',
    {
      schema: {
        tags: ['heavy'],
        summary: 'Export a CMS table as CSV or NDJSON, as a job; download the file when it completes',
        params: z.object({ tableId: z.string() }),
        body: exportBody,
      },
    },
    async (req, reply) => {
      const table = UUID_RE.test(req.params.tableId) ? await getCmsTable(db, req.params.tableId, req.teamId) : undefined;
      if (!table) throw notFound('CMS table');
      const { format, published } = req.body;
      return acceptJob(acceptDeps(deps), req, reply, {
        type: 'cms.export',
        // The body after defaults: `{format}` and `{format, published: false}` are one request.
        fingerprint: fingerprint(['exports', table.id, { format, published }]),
        // Nothing to store: the payload names the table; the worker counts the rows when it starts.
        prepare: async () => ({ payload: { tableId: table.id, format, published } }),
      });
    },
  );
};

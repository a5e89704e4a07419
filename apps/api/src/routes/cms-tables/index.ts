import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { getCmsTable, getRow, listRows, UUID_RE } from '@platform/db';
import { bulkOperationSchema, MAX_BULK_OPERATIONS, validateRowData } from '@platform/jobs';
import { acceptDeps, acceptJob, fingerprint } from '../../accept-job';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';
import { decodeCursor, encodeCursor, presentRow } from '../../present';

const tableParams = z.object({ tableId: z.string() });
const rowSchema = z.object({
  id: z.uuid(),
  identifier: z.string(),
  data: z.record(z.string(), z.unknown()).nullable(),
  draftData: z.record(z.string(), z.unknown()),
  updatedAt: z.string(),
});
const isRowCursor = (v: unknown): v is { id: string } =>
  typeof v === 'object' && v !== null && typeof (v as { id?: unknown }).id === 'string' && UUID_RE.test((v as { id: string }).id);

export const cmsTableRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));

  const ownTable = async (teamId: string, tableId: string) => {
    const t = UUID_RE.test(tableId) ? await getCmsTable(db, tableId, teamId) : undefined;
    if (!t) throw notFound('CMS table');
    return t;
  };

  app.get(
    '/v1/cms-tables/:tableId/rows',
    {
      schema: {
        tags: ['cms'],
        params: tableParams,
        querystring: z.object({
          limit: z.coerce.number().int().min(1).max(500).default(50),
          cursor: z.string().max(200).optional(),
          published: z.enum(['true', 'false']).default('false'),
        }),
        response: { 200: z.object({ rows: z.array(rowSchema), nextCursor: z.string().nullable() }) },
      },
    },
    async (req) => {
      const table = await ownTable(req.teamId, req.params.tableId);
      const after = req.query.cursor ? decodeCursor(req.query.cursor, isRowCursor) : undefined;
      if (req.query.cursor && !after) throw new AppError('validation_failed', 'the cursor is not one this API gave out');
      const rows = await listRows(db, {
        tableId: table.id,
        teamId: req.teamId,
        published: req.query.published === 'true',
        limit: req.query.limit + 1,
        afterId: after?.id,
      });
      const page = rows.slice(0, req.query.limit);
      const more = rows.length > req.query.limit;
      return { rows: page.map(presentRow), nextCursor: more ? encodeCursor({ id: page[page.length - 1]!.id }) : null };
    },
  );

  app.get(
    '/v1/cms-tables/:tableId/rows/:rowId',
    {
      schema: {
        tags: ['cms'],
        params: z.object({ tableId: z.string(), rowId: z.string() }),
        response: { 200: rowSchema },
      },
    },
    async (req) => {
      const table = await ownTable(req.teamId, req.params.tableId);
      const row = UUID_RE.test(req.params.rowId) ? await getRow(db, table.id, req.params.rowId, req.teamId) : undefined;
      if (!row) throw notFound('row');
      return presentRow(row);
    },
  );

  app.post(
    '/v1/cms-tables/:tableId/bulk-writes',
    {
      bodyLimit: deps.config.bulkBodyLimit,
      schema: {
        tags: ['heavy'],
        summary: 'Apply up to 100,000 insert/update/delete operations in order, as a job',
        params: tableParams,
        body: z.object({ operations: z.array(bulkOperationSchema).min(1).max(MAX_BULK_OPERATIONS) }).strict(),
      },
    },
    async (req, reply) => {
      const table = await ownTable(req.teamId, req.params.tableId);
      const ops = req.body.operations;
      // Row data that cannot fit the table is refused before anything is queued.
      const problems: { index: number; field: string; message: string }[] = [];
      let invalidCount = 0;
      ops.forEach((op, index) => {
        if (op.op === 'delete') return;
        for (const p of validateRowData(table.fields, op.data)) {
          invalidCount++;
          if (problems.length < 100) problems.push({ index, field: p.field, message: `${p.field}: ${p.message}` });
        }
      });
      if (invalidCount > 0) {
        throw new AppError('validation_failed', `${invalidCount} problem(s) in the operations' data`, problems, { invalidCount });
      }
      const blobKey = (jobId: string) => `bulk/${jobId}.ndjson`;
      return acceptJob(acceptDeps(deps), req, reply, {
        type: 'cms.bulk_write',
        fingerprint: async () => fingerprint(['bulk-writes', table.id, req.body]),
        prepare: async (jobId) => {
          await deps.blobs.put(blobKey(jobId), ops.map((o) => JSON.stringify(o)).join('\n') + '\n');
          return { payload: { tableId: table.id, blobKey: blobKey(jobId), operationCount: ops.length }, total: ops.length };
        },
        discard: (jobId) => deps.blobs.delete(blobKey(jobId)),
      });
    },
  );
};

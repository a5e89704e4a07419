import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'drizzle-orm';
import { createCmsTable, createProject, createRevision, FIELD_TYPES, getProject, isUniqueViolation, UUID_RE } from '@platform/db';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';

const RESERVED = new Set(['id', 'identifier']);
export const fieldSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(63)
      .regex(/^[\p{L}_][\p{L}\p{N}_ -]*$/u, 'a field name starts with a letter or _ and holds letters, digits, _, - or spaces')
      .refine((n) => !RESERVED.has(n.toLowerCase()), 'id and identifier are reserved'),
    type: z.enum(FIELD_TYPES),
    required: z.boolean().optional(),
  })
  .strict();

const projectParams = z.object({ projectId: z.string() });
const REVISION_ATTEMPTS = 10;

export const projectRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));

  const ownProject = async (teamId: string, projectId: string) => {
    const p = UUID_RE.test(projectId) ? await getProject(db, projectId, teamId) : undefined;
    if (!p) throw notFound('project');
    return p;
  };

  app.post(
    '/v1/projects',
    {
      schema: {
        tags: ['projects'],
        body: z.object({ name: z.string().trim().min(1).max(200) }).strict(),
        response: { 201: z.object({ id: z.uuid(), name: z.string() }) },
      },
    },
    async (req, reply) => {
      const p = await createProject(db, req.teamId, req.body.name);
      return reply.status(201).send({ id: p.id, name: p.name });
    },
  );

  app.post(
    '/v1/projects/:projectId/revisions',
    {
      schema: {
        tags: ['projects'],
        params: projectParams,
        body: z.object({ data: z.json() }).strict(),
        response: { 201: z.object({ id: z.uuid(), revision: z.int() }) },
      },
    },
    async (req, reply) => {
      const project = await ownProject(req.teamId, req.params.projectId);
      // Drizzle writes a JS null as SQL NULL (the column is NOT NULL); JSON null is a value here.
      const data = req.body.data === null ? sql`'null'::jsonb` : req.body.data;
      // The next number is max + 1; a concurrent save of the same project can take it first, and
      // the unique (project, revision) index refuses the loser, which simply asks again.
      for (let attempt = 1; ; attempt++) {
        try {
          return reply.status(201).send(await createRevision(db, project, data));
        } catch (err) {
          if (attempt >= REVISION_ATTEMPTS || !isUniqueViolation(err, 'project_revisions_project_rev_uq')) throw err;
        }
      }
    },
  );

  app.post(
    '/v1/projects/:projectId/cms-tables',
    {
      schema: {
        tags: ['cms'],
        params: projectParams,
        body: z
          .object({ name: z.string().trim().min(1).max(200), fields: z.array(fieldSchema).max(200) })
          .strict(),
        response: { 201: z.object({ id: z.uuid(), name: z.string(), fields: z.array(fieldSchema) }) },
      },
    },
    async (req, reply) => {
      const project = await ownProject(req.teamId, req.params.projectId);
      const names = new Set<string>();
      for (const f of req.body.fields) {
        if (names.has(f.name)) throw new AppError('validation_failed', `field ${f.name} is defined twice`);
        names.add(f.name);
      }
      const t = await createCmsTable(db, { teamId: req.teamId, projectId: project.id, name: req.body.name, fields: req.body.fields });
      return reply.status(201).send({ id: t.id, name: t.name, fields: t.fields });
    },
  );
};

import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { getProject, getRevision, listProjectTables, UUID_RE } from '@platform/db';
import { publishJob } from '@platform/jobs';
import { acceptDeps, acceptJob, fingerprint } from '../../accept-job';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';

export const publishRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));

  app.post(
    '/v1/projects/:projectId/publishes',
    {
      schema: {
        tags: ['heavy'],
        summary: 'Publish a revision (default: the latest) and make every draft CMS row of the project live, as a job',
        params: z.object({ projectId: z.string() }),
        // No body at all (Fastify gives null) means "the latest revision", like `{}`.
        body: z.object({ revisionId: z.uuid().optional() }).strict().nullish(),
      },
    },
    async (req, reply) => {
      const project = UUID_RE.test(req.params.projectId) ? await getProject(db, req.params.projectId, req.teamId) : undefined;
      if (!project) throw notFound('project');
      const revisionId = req.body?.revisionId;
      const revision = await getRevision(db, project.id, revisionId);
      if (!revision) {
        // The project exists (it is the caller's); what is wrong is the request: a revision that
        // is not one of this project's (400), or nothing saved yet to publish (409, the state).
        if (revisionId) {
          throw new AppError('validation_failed', 'revisionId is not a revision of this project', [
            { path: 'body.revisionId', message: 'no revision of this project has this id' },
          ]);
        }
        throw new AppError('conflict', 'the project has no revision to publish yet: save one first');
      }
      // The tables as they are now: the publish writes these (and holds them against other jobs).
      const tableIds = (await listProjectTables(db, project.id)).map((t) => t.id);
      if (!publishJob.payload.shape.tableIds.safeParse(tableIds).success) {
        throw new AppError('validation_failed', `the project has ${tableIds.length} CMS tables, over what one publish covers`);
      }
      return acceptJob(acceptDeps(deps), req, reply, {
        type: 'project.publish',
        fingerprint: fingerprint(['publishes', project.id, { revisionId: revisionId ?? null }]),
        prepare: async () => ({
          payload: { projectId: project.id, revisionId: revision.id, tableIds },
          // Counted by the worker when it starts (a count over every row is not for the request path).
          total: null,
        }),
      });
    },
  );
};

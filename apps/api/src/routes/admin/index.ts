import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createTeam, createToken, revokeToken, UUID_RE } from '@platform/db';
import type { ApiDeps } from '../../deps';
import { notFound } from '../../errors';
import { adminAuth } from '../../plugins/auth';

export const adminRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  app.addHook('onRequest', adminAuth(db, deps.config.adminToken));

  app.post(
    '/v1/admin/teams',
    {
      schema: {
        tags: ['admin'],
        summary: 'Create a team and its first token (shown once)',
        body: z.object({ name: z.string().trim().min(1).max(200) }).strict(),
        response: { 201: z.object({ id: z.uuid(), name: z.string(), token: z.string(), tokenId: z.uuid() }) },
      },
    },
    async (req, reply) => reply.status(201).send(await createTeam(db, req.body.name)),
  );

  app.post(
    '/v1/admin/teams/:teamId/tokens',
    {
      schema: {
        tags: ['admin'],
        summary: 'Create a further token for a team (shown once)',
        params: z.object({ teamId: z.string() }),
        response: { 201: z.object({ id: z.uuid(), token: z.string() }) },
      },
    },
    async (req, reply) => {
      const created = UUID_RE.test(req.params.teamId) ? await createToken(db, req.params.teamId) : undefined;
      if (!created) throw notFound('team');
      return reply.status(201).send(created);
    },
  );

  app.delete(
    '/v1/admin/tokens/:tokenId',
    {
      schema: {
        tags: ['admin'],
        summary: 'Revoke a token: it answers 401 from then on',
        params: z.object({ tokenId: z.string() }),
      },
    },
    async (req, reply) => {
      const ok = UUID_RE.test(req.params.tokenId) && (await revokeToken(db, req.params.tokenId));
      if (!ok) throw notFound('token');
      return reply.status(204).send();
    },
  );
};

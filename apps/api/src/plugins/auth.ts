import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { teamForToken, type Db } from '@platform/db';
import { AppError } from '../errors';

declare module 'fastify' {
  interface FastifyRequest {
    teamId: string;
  }
}

function bearer(req: FastifyRequest): string {
  const h = req.headers.authorization;
  if (!h) throw new AppError('unauthorized', 'send a token: Authorization: Bearer <token>');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  if (!m) throw new AppError('unauthorized', 'the Authorization header must be "Bearer <token>"');
  return m[1]!;
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

/** `/v1/admin/*`: the operator token only; a team token is valid but may not (403). */
export function adminAuth(db: Db, adminToken: string) {
  return async (req: FastifyRequest, _reply: FastifyReply) => {
    const token = bearer(req);
    if (sameSecret(token, adminToken)) return;
    if (await teamForToken(db, token)) throw new AppError('forbidden', 'a team token may not use admin routes');
    throw new AppError('unauthorized', 'the token is invalid or revoked');
  };
}

/** Team routes: a team token; every query below is filtered by `req.teamId`. */
export function teamAuth(db: Db, adminToken: string) {
  return async (req: FastifyRequest, _reply: FastifyReply) => {
    const token = bearer(req);
    const found = await teamForToken(db, token);
    if (found) {
      req.teamId = found.teamId;
      return;
    }
    if (sameSecret(token, adminToken)) throw new AppError('forbidden', 'the admin token cannot act for a team; use a team token');
    throw new AppError('unauthorized', 'the token is invalid or revoked');
  };
}

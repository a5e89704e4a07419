import { isConnectionError } from '@platform/db';
import { ERROR_STATUS, isRedisUnavailable, type ErrorCode } from '@platform/jobs';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';

// The codes and statuses of API.md: the same table as the API's, one error shape.
export { ERROR_STATUS, type ErrorCode };

export function sendError(reply: FastifyReply, code: ErrorCode, message: string, retryAfterS?: number): FastifyReply {
  if (code === 'dependency_unavailable') reply.header('retry-after', String(retryAfterS ?? 5));
  if (code === 'rate_limited') reply.header('retry-after', String(retryAfterS ?? 60));
  return reply.code(ERROR_STATUS[code]).type('application/json; charset=utf-8').send({ error: { code, message } });
}

/** Thrown by a route to answer with one of the codes above. */
export class DashboardError extends Error {
  override name = 'DashboardError';
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The one error handler: 4xx say what was wrong, 5xx hide internals (the log has them). */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if ((err as unknown) instanceof DashboardError) return sendError(reply, (err as unknown as DashboardError).code, err.message);
    const status = err.statusCode ?? 500;
    if (status === 413) return sendError(reply, 'payload_too_large', 'the request body is too large');
    if (status === 415) return sendError(reply, 'unsupported_media_type', 'this content type is not accepted here');
    if (status >= 400 && status < 500) return sendError(reply, 'validation_failed', err.message);
    if (isConnectionError(err) || isRedisUnavailable(err)) {
      request.log.warn({ err }, 'dependency unavailable');
      return sendError(reply, 'dependency_unavailable', 'PostgreSQL or Redis does not answer; try again shortly');
    }
    request.log.error({ err }, 'request failed');
    return sendError(reply, 'internal', 'internal error');
  });
  app.setNotFoundHandler((_request, reply) => sendError(reply, 'not_found', 'no such page'));
}

import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { isConnectionError } from '@platform/db';
import { ERROR_STATUS, isRedisUnavailable, type ErrorCode } from '@platform/jobs';

export { ERROR_STATUS, isRedisUnavailable, type ErrorCode };

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown[],
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
  }
  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export const notFound = (what: string) => new AppError('not_found', `${what} not found`);

const MAX_DETAILS = 100;

function send(reply: FastifyReply, err: AppError): FastifyReply {
  if (err.code === 'dependency_unavailable' || err.code === 'rate_limited') {
    const after = err.extra?.retryAfterSeconds;
    if (typeof after === 'number') reply.header('retry-after', String(after));
    else if (!reply.getHeader('retry-after')) reply.header('retry-after', '5');
  }
  return reply.status(err.status).send({
    error: {
      code: err.code,
      message: err.message,
      ...(err.details ? { details: err.details.slice(0, MAX_DETAILS) } : {}),
      ...err.extra,
    },
  });
}

/** Maps anything raised (validation, auth, body limits, Redis or Postgres down) to the one shape. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const fe = err as FastifyError;
  if (hasZodFastifySchemaValidationErrors(err)) {
    const details = err.validation.map((v) => ({
      path: [err.validationContext ?? 'body', ...v.instancePath.split('/').filter(Boolean)].join('.'),
      message: v.message,
    }));
    return new AppError('validation_failed', `the ${err.validationContext ?? 'request'} does not fit the schema`, details, {
      invalidCount: details.length,
    });
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('payload_too_large', 'the request body is over the size limit (measured after decompression)');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('unsupported_media_type', fe.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('validation_failed', 'the JSON body is empty');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new AppError('validation_failed', 'the body is not valid JSON');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('validation_failed', 'the body length does not match Content-Length');
    case 'Z_DATA_ERROR':
    case 'Z_BUF_ERROR':
      return new AppError('validation_failed', 'the body is not valid gzip data');
    case 'FST_ERR_VALIDATION':
      return new AppError('validation_failed', fe.message);
  }
  if (fe.statusCode === 400 && (err as SyntaxError) instanceof SyntaxError) {
    return new AppError('validation_failed', 'the body is not valid JSON');
  }
  if (fe.statusCode === 413) return new AppError('payload_too_large', fe.message);
  if (fe.statusCode === 415) return new AppError('unsupported_media_type', fe.message);
  if (isConnectionError(err)) return new AppError('dependency_unavailable', 'PostgreSQL does not answer; try again shortly');
  if (isRedisUnavailable(err)) return new AppError('dependency_unavailable', 'Redis does not answer; try again shortly');
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new AppError('validation_failed', fe.message);
  }
  return new AppError('internal', 'an internal error occurred; it has been logged');
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => {
    let appErr = toAppError(err);
    if ((err as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      const type = req.headers['content-type'];
      appErr = new AppError('unsupported_media_type', type ? `this route does not take Content-Type ${type}` : 'a body needs a Content-Type');
    }
    if (appErr.status >= 500) req.log.error({ err }, 'request failed');
    return send(reply, appErr);
  });
  app.setNotFoundHandler((req, reply) => send(reply, new AppError('not_found', `no route ${req.method} ${req.url.split('?')[0]}`)));
}

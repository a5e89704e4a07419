/**
 * Errors that end a run in a known way. Permanent failures (bad input) fail the job at once,
 * without retries; everything else is treated as transient and retried with backoff.
 */
export class JobInputError extends Error {
  override name = 'JobInputError';
  constructor(
    message: string,
    readonly code: string = 'validation_failed',
    readonly details: unknown[] = [],
    readonly invalidCount?: number,
  ) {
    super(message);
  }
}

/** The run's lease or checkpoint moved on: another run owns the job, so this one commits nothing. */
export class FencedError extends Error {
  override name = 'FencedError';
}

/**
 * The job's row holds this run's lease but an earlier checkpoint than the run committed: chunks it
 * committed were lost (chunk transactions commit with `synchronous_commit = off`, and PostgreSQL
 * crashed before their WAL reached the disk, taking each whole with its checkpoint). The run must
 * not go on from what it remembers; a new one resumes from the row.
 */
export class CheckpointLostError extends Error {
  override name = 'CheckpointLostError';
}

export type StopReason = 'cancelled' | 'shutdown' | 'timeout' | 'yield';

/** Raised at a chunk boundary: the run stops there, with everything before it committed. */
export class StopRun extends Error {
  override name = 'StopRun';
  constructor(readonly reason: StopReason) {
    super(`run stopped at a chunk boundary: ${reason}`);
  }
}

/** A fault injected by tests through configuration (never enabled unless configured). */
export class InjectedFault extends Error {
  override name = 'InjectedFault';
}

/** The error codes of the HTTP contract (shared/API.md) and their statuses: one table for every app. */
export const ERROR_STATUS = {
  validation_failed: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal: 500,
  not_implemented: 501,
  dependency_unavailable: 503,
} as const;
export type ErrorCode = keyof typeof ERROR_STATUS;

/** Errors from Redis (ioredis, BullMQ) that mean "Redis does not answer". */
export function isRedisUnavailable(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /enableOfflineQueue|Connection is closed|Stream isn't writeable|ECONNREFUSED|Command timed out|connect ETIMEDOUT|MaxRetriesPerRequest/i.test(
    msg,
  );
}

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

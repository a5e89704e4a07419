import { Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { JobDefinition } from './define-job';

/**
 * The Redis key prefix of every queue. Braces make it a hash tag, so a clustered Redis keeps each
 * queue's keys in one slot (BullMQ's Lua scripts touch several keys at once).
 */
export const DEFAULT_QUEUE_PREFIX = '{jobs}';

/** BullMQ job id of a dispatch: BullMQ refuses `:` in custom ids, hence the dot. */
export const bullJobId = (rowId: string, dispatch: number) => `${rowId}.${dispatch}`;

/**
 * Bounded retention: the history lives in Postgres, so Redis keeps only recent jobs for bull-board.
 * Exponential backoff with jitter spreads retries after a shared fault (a Postgres restart).
 */
export function bullJobOptions(def: JobDefinition): JobsOptions {
  return {
    attempts: def.defaults.attempts,
    backoff: { type: 'exponential', delay: def.defaults.backoffMs, jitter: 0.5 },
    removeOnComplete: { age: 24 * 3600, count: 1_000 },
    removeOnFail: { age: 7 * 24 * 3600, count: 5_000 },
  };
}

export function createQueue(name: string, connection: Redis, prefix: string): Queue {
  return new Queue(name, { connection, prefix, skipWaitingForReady: true });
}

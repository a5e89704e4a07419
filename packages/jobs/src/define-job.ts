import { z } from 'zod';

export interface JobDefaults {
  /** Runs in all, first included; transient failures are retried up to this. */
  attempts: number;
  /** First backoff delay; exponential with jitter after it. */
  backoffMs: number;
  /** Maximum run time of the whole job (all runs); past it the job fails with a timeout. */
  maxRunTimeMs: number;
}

export interface JobDefinition<N extends string = string, S extends z.ZodType = z.ZodType> {
  name: N;
  /** Bumped on a breaking payload change; additions stay optional fields of the same version. */
  version: number;
  queue: string;
  payload: S;
  defaults: JobDefaults;
  /** Resources the job writes; jobs sharing one run one at a time, in the order accepted. */
  lockKeys(payload: z.infer<S>): string[];
  /**
   * Small interactive work (a bulk write of a few hundred operations, a one-table publish) runs
   * ahead of the same team's bulk imports and exports.
   */
  workClass(payload: z.infer<S>): WorkClass;
}

export type WorkClass = 'interactive' | 'bulk';

export function defineJob<const N extends string, S extends z.ZodType>(def: JobDefinition<N, S>): JobDefinition<N, S> {
  return def;
}

/** What a BullMQ job carries: the history row it names and the small, typed payload. */
export const envelopeSchema = z.object({
  jobId: z.uuid(),
  teamId: z.uuid(),
  type: z.string(),
  version: z.int(),
  payload: z.unknown(),
});
export type Envelope = z.infer<typeof envelopeSchema>;

/** Redis carries envelopes, not data (ARCHITECTURE invariant 2). */
export const MAX_ENVELOPE_BYTES = 16 * 1024;

export const tableLockKey = (tableId: string) => `cms_table:${tableId}`;

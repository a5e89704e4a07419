import { createHash } from 'node:crypto';
import { and, eq, lte, sql } from 'drizzle-orm';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  failUnqueued,
  getJob,
  idempotencyKeys,
  insertJob,

  uuidv7,
  type Db,
  type JobRow,
} from '@platform/db';
import { EnvelopeTooLargeError, jobDefinition, type JobName, type Producer } from '@platform/jobs';
import type { Redis } from 'ioredis';
import type { ApiDeps } from './deps';
import { AppError, isRedisUnavailable } from './errors';
import { checkEnqueueRate, checkQueuedCap } from './team-limits';
import { presentJob } from './present';

export interface AcceptDeps {
  db: Db;
  producer: Producer;
  redis: Redis;
  queuePrefix: string;
  teamMaxQueued: number;
  teamEnqueuePerMinute: number;
}

export function acceptDeps(deps: ApiDeps): AcceptDeps {
  return {
    db: deps.database.db,
    producer: deps.producer,
    redis: deps.redis,
    queuePrefix: deps.config.queuePrefix,
    teamMaxQueued: deps.config.teamMaxQueued,
    teamEnqueuePerMinute: deps.config.teamEnqueuePerMinute,
  };
}

export interface AcceptSpec {
  type: JobName;
  /**
   * Identifies the request for Idempotency-Key reuse checks: route, parameters and body. A streamed
   * body is hashed as it is stored, so its fingerprint comes from `prepare`; here it is then a
   * function, called only when the key was seen before, that reads the body without keeping it.
   */
  fingerprint: string | (() => Promise<string>);
  /**
   * Stores bulk input (outside Redis) and returns the payload; runs only for a new job. Returns the
   * request's fingerprint too when `fingerprint` is a function.
   */
  prepare(jobId: string): Promise<{ payload: Record<string, unknown>; total?: number | null; fingerprint?: string }>;
  /** Undoes `prepare` when no job was created after all (idempotent replay, enqueue failure). */
  discard?(jobId: string): Promise<void>;
}

const IDEMPOTENCY_WINDOW = sql`interval '24 hours'`;
const KEY_RE = /^[\x21-\x7e]{1,255}$/;

export function fingerprint(parts: unknown[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(typeof p === 'string' ? p : JSON.stringify(p)).update('\0');
  return h.digest('hex');
}

class Replay extends Error {}

async function replay(db: Db, teamId: string, key: string, fp: string | (() => Promise<string>)): Promise<JobRow | undefined> {
  const [k] = await db
    .select()
    .from(idempotencyKeys)
    .where(
      and(
        eq(idempotencyKeys.teamId, teamId),
        eq(idempotencyKeys.key, key),
        sql`${idempotencyKeys.createdAt} > now() - ${IDEMPOTENCY_WINDOW}`,
      ),
    );
  if (!k) return undefined;
  if (k.requestHash !== (typeof fp === 'string' ? fp : await fp())) {
    throw new AppError('conflict', 'this Idempotency-Key was already used with another request');
  }
  const job = await getJob(db, k.jobId, teamId);
  if (!job) throw new AppError('conflict', 'this Idempotency-Key names a job that no longer exists');
  return job;
}

/**
 * The request path of every heavy operation (ARCHITECTURE invariant 1): store the input outside
 * Redis, record the job and its idempotency key in one transaction, enqueue, answer 202. Replays of
 * an Idempotency-Key answer 200 with the first job; the Postgres unique key settles races.
 */
export async function acceptJob(deps: AcceptDeps, req: FastifyRequest, reply: FastifyReply, spec: AcceptSpec) {
  const { db, producer } = deps;
  const teamId = req.teamId;
  const rawKey = req.headers['idempotency-key'];
  const key = Array.isArray(rawKey) ? rawKey[0] : rawKey;
  if (key !== undefined && !KEY_RE.test(key)) {
    throw new AppError('validation_failed', 'Idempotency-Key must be 1 to 255 visible ASCII characters');
  }
  const def = jobDefinition(spec.type)!;
  if (key) {
    const existing = await replay(db, teamId, key, spec.fingerprint);
    if (existing) return reply.status(200).header('location', `/v1/jobs/${existing.id}`).send(presentJob(existing));
  }

  // Admission before any input is stored: the team's request rate, then (cheaply, and exactly
  // again inside the transaction below) its queued-jobs cap.
  await checkEnqueueRate(deps.redis, deps.queuePrefix, teamId, deps.teamEnqueuePerMinute);
  await checkQueuedCap(db, teamId, deps.teamMaxQueued);

  const jobId = uuidv7();
  const { payload, total, fingerprint: prepared } = await spec.prepare(jobId);
  // Hashing a 100,000-operation body costs real time: only a request with a key pays for it.
  let fp = prepared ?? (typeof spec.fingerprint === 'string' ? spec.fingerprint : undefined);
  if (key && fp === undefined && typeof spec.fingerprint === 'function') fp = await spec.fingerprint();
  if (key && fp === undefined) {
    await spec.discard?.(jobId).catch(() => {});
    throw new Error(`${spec.type}: no fingerprint for an Idempotency-Key request`);
  }
  let row: JobRow;
  try {
    row = await db.transaction(async (tx) => {
      await checkQueuedCap(tx, teamId, deps.teamMaxQueued);
      const created = await insertJob(tx, {
        id: jobId,
        teamId,
        type: def.name,
        queue: def.queue,
        payload,
        lockKeys: def.lockKeys(def.payload.parse(payload)),
        progressTotal: total ?? null,
      });
      if (key) {
        await tx
          .delete(idempotencyKeys)
          .where(
            and(
              eq(idempotencyKeys.teamId, teamId),
              eq(idempotencyKeys.key, key),
              lte(idempotencyKeys.createdAt, sql`now() - ${IDEMPOTENCY_WINDOW}`),
            ),
          );
        const inserted = await tx
          .insert(idempotencyKeys)
          .values({ teamId, key, requestHash: fp!, jobId })
          .onConflictDoNothing()
          .returning({ jobId: idempotencyKeys.jobId });
        if (inserted.length === 0) throw new Replay();
      }
      return created;
    });
  } catch (err) {
    await spec.discard?.(jobId).catch(() => {});
    if (err instanceof Replay && key && fp) {
      const existing = await replay(db, teamId, key, fp);
      if (existing) return reply.status(200).header('location', `/v1/jobs/${existing.id}`).send(presentJob(existing));
    }
    throw err;
  }

  try {
    await producer.dispatch(row);
  } catch (err) {
    // No job is left behind: the row ends failed, the key is freed for a retry, the input dropped.
    const refused = err instanceof EnvelopeTooLargeError;
    const code = refused ? 'validation_failed' : 'dependency_unavailable';
    await failUnqueued(db, row.id, { code, message: err instanceof Error ? err.message : String(err) }).catch(() => {});
    if (key) {
      await db
        .delete(idempotencyKeys)
        .where(and(eq(idempotencyKeys.teamId, teamId), eq(idempotencyKeys.key, key)))
        .catch(() => {});
    }
    await spec.discard?.(jobId).catch(() => {});
    if (refused) throw new AppError('validation_failed', (err as Error).message);
    if (isRedisUnavailable(err) || !(err instanceof AppError)) {
      req.log.warn({ err: String(err), jobId }, 'enqueue failed');
      throw new AppError('dependency_unavailable', 'the job queue (Redis) does not answer; nothing was queued, try again shortly');
    }
    throw err;
  }
  return reply.status(202).header('location', `/v1/jobs/${row.id}`).send(presentJob(row));
}


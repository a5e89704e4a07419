import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobDefinition } from './catalog';
import { teamQueueRank, type Db } from '@platform/db';
import { MAX_ENVELOPE_BYTES, type Envelope, type WorkClass } from './define-job';
import { bullJobId, bullJobOptions, createQueue } from './queues';

export class EnvelopeTooLargeError extends Error {
  override name = 'EnvelopeTooLargeError';
}

export interface DispatchRow {
  id: string;
  teamId: string;
  type: string;
  queue: string;
  seq: number;
  payload: unknown;
  dispatches: number;
}

/** BullMQ's largest priority (2^21 - 1); lower runs first. */
const MAX_PRIORITY = 2_097_151;

/**
 * Interleaves teams in a queue: a job's priority is its place in its own team's line (twice,
 * plus one for bulk work), so the queue takes the first job of every team, then the second of
 * every team, and so on, whatever any one team's backlog. Equal priorities keep arrival order.
 */
export function fairPriority(rankInTeam: number, workClass: WorkClass): number {
  return Math.min(MAX_PRIORITY, 1 + 2 * rankInTeam + (workClass === 'bulk' ? 1 : 0));
}

/**
 * Hands history rows to BullMQ. Every job type's queue, options and envelope come from the
 * catalog; nothing else names a queue. A dispatch's BullMQ id is `<row>.<dispatch>`, so adding the
 * same dispatch twice (a retried hand-back) creates one BullMQ job.
 */
export class Producer {
  private readonly queues = new Map<string, Queue>();

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
    /** Without it every job gets the same priority (plain FIFO per queue). */
    private readonly db?: Db,
  ) {}

  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = createQueue(name, this.connection, this.prefix);
      this.queues.set(name, q);
    }
    return q;
  }

  async dispatch(row: DispatchRow, opts: { delayMs?: number } = {}): Promise<void> {
    const def = jobDefinition(row.type);
    if (!def) throw new Error(`unknown job type ${row.type}`);
    const envelope: Envelope = {
      jobId: row.id,
      teamId: row.teamId,
      type: def.name,
      version: def.version,
      payload: def.payload.parse(row.payload),
    };
    const size = Buffer.byteLength(JSON.stringify(envelope));
    if (size > MAX_ENVELOPE_BYTES) {
      throw new EnvelopeTooLargeError(`job envelope is ${size} bytes; Redis carries at most ${MAX_ENVELOPE_BYTES}`);
    }
    // The rank orders a team's line; without it (the database did not answer) the job still goes.
    const rank = this.db ? await teamQueueRank(this.db, row).catch(() => 0) : 0;
    await this.queue(def.queue).add(def.name, envelope, {
      ...bullJobOptions(def),
      jobId: bullJobId(row.id, row.dispatches),
      delay: opts.delayMs,
      priority: fairPriority(rank, def.workClass(envelope.payload as never)),
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}

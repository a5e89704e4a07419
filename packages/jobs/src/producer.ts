import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobDefinition } from './catalog';
import { MAX_ENVELOPE_BYTES, type Envelope } from './define-job';
import { bullJobId, bullJobOptions, createQueue } from './queues';

export class EnvelopeTooLargeError extends Error {
  override name = 'EnvelopeTooLargeError';
}

export interface DispatchRow {
  id: string;
  teamId: string;
  type: string;
  payload: unknown;
  dispatches: number;
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
    await this.queue(def.queue).add(def.name, envelope, {
      ...bullJobOptions(def),
      jobId: bullJobId(row.id, row.dispatches),
      delay: opts.delayMs,
    });
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }
}

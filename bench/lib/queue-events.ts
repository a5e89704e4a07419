import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';

/**
 * Marks the current end of a queue's BullMQ event stream; the returned function counts the events
 * since, by name (`delayed` = a claim refused because an earlier job holds the table, and the
 * delivery put back for WORKER_BLOCKED_RETRY_MS). The stream is capped (about 10,000 events), so
 * counts are exact only for runs shorter than that.
 */
export async function markQueueEvents(redis: Redis, queue: Queue): Promise<() => Promise<Record<string, number>>> {
  const key = queue.toKey('events');
  const last = await redis.xrevrange(key, '+', '-', 'COUNT', 1);
  const since = last[0]?.[0];
  return async () => {
    const entries = await redis.xrange(key, since ? `(${since}` : '-', '+');
    const counts: Record<string, number> = {};
    for (const [, fields] of entries) {
      const i = fields.indexOf('event');
      const name = i >= 0 ? fields[i + 1]! : 'unknown';
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  };
}

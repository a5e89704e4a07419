import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../deps';

/** Reads timed over this long make one percentile; fewer than MIN_SAMPLES make none. */
const WINDOW_MS = 1_000;
const MIN_SAMPLES = 20;

/**
 * Tells the workers when the studio's interactive path suffers: a short-lived Redis key is kept
 * set while requests wait for the API's pool, or while the API's reads slow down (their 90th
 * percentile over the last second above `API_PRESSURE_LATENCY_MS`). Workers then slow their
 * chunks down (smaller chunks, a pause before each) before the studio's traffic slows further.
 *
 * The latency signal is the one that fires on a small machine: there the pool rarely waits, but
 * the workers' chunks take the CPU the reads need (bench `interactive-latency`).
 */
export function publishDbPressure(app: FastifyInstance, deps: ApiDeps, everyMs = 200): void {
  const key = `${deps.config.queuePrefix}:db-pressure`;
  const limitMs = deps.config.pressureLatencyMs;
  const reads = new ReadLatencies(WINDOW_MS);
  if (limitMs > 0) {
    app.addHook('onResponse', async (request, reply) => {
      if (request.method === 'GET' && request.url.startsWith('/v1/') && reply.statusCode < 500) reads.add(reply.elapsedTime);
    });
  }
  const timer = setInterval(() => {
    const waiting = deps.database.pool.waitingCount;
    const p90 = limitMs > 0 ? reads.p90() : undefined;
    const slow = p90 !== undefined && p90 > limitMs;
    if ((waiting > 0 || slow) && deps.redis.status === 'ready') {
      deps.redis.set(key, waiting > 0 ? `pool:${waiting}` : `p90:${Math.round(p90!)}ms`, 'PX', 2_000).catch(() => {});
    }
  }, everyMs);
  timer.unref();
  app.addHook('onClose', async () => clearInterval(timer));
}

/** Durations of the reads of the last `windowMs`, in arrival order. */
export class ReadLatencies {
  private samples: { at: number; ms: number }[] = [];

  constructor(private readonly windowMs: number) {}

  add(ms: number, now = Date.now()): void {
    this.samples.push({ at: now, ms });
    if (this.samples.length > 10_000) this.samples.splice(0, this.samples.length - 10_000);
  }

  /** The 90th percentile of the window, or undefined with fewer than MIN_SAMPLES reads in it. */
  p90(now = Date.now()): number | undefined {
    const from = now - this.windowMs;
    let first = 0;
    while (first < this.samples.length && this.samples[first]!.at < from) first++;
    if (first > 0) this.samples.splice(0, first);
    if (this.samples.length < MIN_SAMPLES) return undefined;
    const sorted = this.samples.map((s) => s.ms).sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))];
  }
}

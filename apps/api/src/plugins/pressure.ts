import type { FastifyInstance } from 'fastify';
import { signalPressure } from '@platform/jobs';
import type { ApiDeps } from '../deps';

/** Reads timed over this long make one percentile; fewer than MIN_SAMPLES make none. */
const WINDOW_MS = 1_000;
const MIN_SAMPLES = 20;
/**
 * How long one slow second keeps the workers paced. Longer than the pool signal's 2 s: paced
 * workers make the reads fast again at once, and without this hold the two would take turns.
 */
const LATENCY_HOLD_MS = 5_000;

/**
 * Tells the workers when the studio's interactive path suffers: a short-lived Redis key is kept
 * set while requests wait for the API's pool, or while the API's reads slow down (their 99th
 * percentile over the last second above `API_PRESSURE_LATENCY_MS`). Workers then slow their
 * chunks down (smaller chunks, a pause before each) before the studio's traffic slows further.
 *
 * The latency signal is the one that fires on a small machine: there the pool rarely waits, but
 * the workers' chunks take the CPU the reads need (bench `interactive-latency`).
 */
export function publishDbPressure(app: FastifyInstance, deps: ApiDeps, everyMs = 100): void {
  const limitMs = deps.config.pressureLatencyMs;
  const reads = new ReadLatencies(WINDOW_MS);
  if (limitMs > 0) {
    app.addHook('onResponse', async (request, reply) => {
      // Reads of rows and jobs; a download's time is the client's own streaming, not the database's.
      const route = request.routeOptions.url ?? '';
      if (request.method === 'GET' && route.startsWith('/v1/') && !route.endsWith('/download') && reply.statusCode < 500) {
        reads.add(reply.elapsedTime);
      }
    });
  }
  const timer = setInterval(() => {
    const waiting = deps.database.pool.waitingCount;
    const p99 = limitMs > 0 ? reads.p99() : undefined;
    const slow = p99 !== undefined && p99 > limitMs;
    if ((waiting > 0 || slow) && deps.redis.status === 'ready') {
      const [value, holdMs] = waiting > 0 ? [`pool:${waiting}`, 2_000] : [`p99:${Math.round(p99!)}ms`, LATENCY_HOLD_MS];
      signalPressure(deps.redis, deps.config.queuePrefix, value, holdMs).catch(() => {});
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

  /**
   * The 99th percentile of the window, or undefined with fewer than MIN_SAMPLES reads in it. Taken
   * as the k-th slowest read with k at least 2, so that one outlier (a GC pause) never makes it.
   */
  p99(now = Date.now()): number | undefined {
    const from = now - this.windowMs;
    let first = 0;
    while (first < this.samples.length && this.samples[first]!.at < from) first++;
    if (first > 0) this.samples.splice(0, first);
    if (this.samples.length < MIN_SAMPLES) return undefined;
    const sorted = this.samples.map((s) => s.ms).sort((a, b) => a - b);
    const k = Math.max(2, Math.ceil(sorted.length * 0.01));
    return sorted[sorted.length - k];
  }
}

import { sleep } from './stats';

/** One kind of request the generator fires; `fire` resolves when the answer is complete. */
export interface LoadKind {
  name: string;
  fire(i: number): Promise<void>;
}

export interface OpenLoopOptions {
  /** The fixed schedule: one request every `intervalMs` (5 ms = 200 requests/s). */
  intervalMs: number;
  /** Which kind the i-th scheduled request is. */
  kindOf(i: number): LoadKind;
  /** Stop scheduling after this long (ms)… */
  maxDurationMs: number;
  /** …or once this settles (the work being measured ended), whichever comes first. */
  until?: Promise<unknown>;
  /** How long to wait for the answers still outstanding once scheduling stopped. */
  drainTimeoutMs?: number;
  signal?: AbortSignal;
  /** Told of every answered request: its kind, its scheduled time (performance.now()) and its latency. */
  onAnswer?(kind: string, scheduledAt: number, ms: number): void;
}

export interface KindResult {
  /** Latency of each request, from its scheduled time (not its actual send) to its answer, ms. */
  latencies: number[];
  errors: number;
  firstError?: string;
  /** Answers still missing when the drain timed out (counted neither as latency nor error). */
  unanswered: number;
  sent: number;
}

export interface OpenLoopResult {
  byKind: Record<string, KindResult>;
  /** Requests scheduled, and how long the schedule ran (s). */
  scheduled: number;
  seconds: number;
  /** Largest lateness of the generator itself (a send after its scheduled time), ms. */
  maxSendLagMs: number;
}

/**
 * An open-loop load generator: requests go out on a fixed schedule whatever the answers do, and
 * each latency is taken from the scheduled time, so a stall shows in full (no coordinated
 * omission). Bounded by count (the duration) and time (the drain); loopback only.
 */
export async function openLoop(opts: OpenLoopOptions): Promise<OpenLoopResult> {
  const byKind: Record<string, KindResult> = {};
  const pending = new Set<Promise<void>>();
  let stop = false;
  opts.until?.then(
    () => (stop = true),
    () => (stop = true),
  );
  const t0 = performance.now() + opts.intervalMs;
  const maxCount = Math.ceil(opts.maxDurationMs / opts.intervalMs);
  let i = 0;
  let maxSendLagMs = 0;
  while (!stop && i < maxCount) {
    opts.signal?.throwIfAborted();
    const wait = t0 + i * opts.intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    const now = performance.now();
    // Every request due by now goes out, each keeping its own scheduled time.
    while (!stop && i < maxCount && t0 + i * opts.intervalMs <= now) {
      const scheduled = t0 + i * opts.intervalMs;
      maxSendLagMs = Math.max(maxSendLagMs, now - scheduled);
      const kind = opts.kindOf(i);
      const r = (byKind[kind.name] ??= { latencies: [], errors: 0, unanswered: 0, sent: 0 });
      r.sent++;
      const p: Promise<void> = kind.fire(i).then(
        () => {
          const ms = performance.now() - scheduled;
          r.latencies.push(ms);
          opts.onAnswer?.(kind.name, scheduled, ms);
        },
        (err: unknown) => {
          r.errors++;
          r.firstError ??= err instanceof Error ? err.message : String(err);
        },
      );
      pending.add(p);
      void p.finally(() => pending.delete(p));
      i++;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const drainEnd = performance.now() + (opts.drainTimeoutMs ?? 120_000);
  while (pending.size > 0 && performance.now() < drainEnd) await sleep(20);
  for (const k of Object.values(byKind)) k.unanswered = k.sent - k.latencies.length - k.errors;
  return { byKind, scheduled: i, seconds, maxSendLagMs };
}

/** What the signal says: up now, and how long ago it was last set (by Redis's clock), when known. */
export interface PressureReading {
  up: boolean;
  sinceMs?: number;
}

/**
 * How hard a worker should hold back for the studio's sake, from the API's `db-pressure` signal.
 *
 * The signal is up while the API's reads are slow (or its pool waits) and is read here at most
 * every `pollMs`. A signal that only paces while it is up reacts too late for a run that starts
 * while the studio is busy: measured in bench `interactive-latency`, more than half of the reads
 * over their target came in the first second of each run, before the API had seen a slow second
 * and the worker had read its key. So the gauge remembers: after the signal is gone the level
 * falls back from 1 to 0 over `memoryMs`, counted from when the API last set it (which Redis
 * keeps, so a worker started since knows too) or, failing that, from when this worker last saw it.
 */
export class PressureGauge {
  private lastSeen = Number.NEGATIVE_INFINITY;
  private up = false;
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly read: () => Promise<PressureReading>,
    private readonly opts: { pollMs: number; memoryMs: number },
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * 1 while the signal is up; then falling linearly to 0 over `memoryMs`; 0 when pressure was
   * never seen. A Redis that does not answer reads as no pressure (the memory still counts down).
   */
  async level(): Promise<number> {
    if (this.now() - this.readAt >= this.opts.pollMs) {
      this.reading ??= this.read()
        .catch((): PressureReading => ({ up: false }))
        .then((r) => {
          this.up = r.up;
          this.readAt = this.now();
          if (r.up) this.lastSeen = this.readAt;
          else if (r.sinceMs !== undefined) this.lastSeen = Math.max(this.lastSeen, this.readAt - r.sinceMs);
        })
        .finally(() => (this.reading = undefined));
      await this.reading;
    }
    if (this.up) return 1;
    if (this.opts.memoryMs <= 0) return 0;
    const since = this.now() - this.lastSeen;
    return since >= this.opts.memoryMs ? 0 : 1 - since / this.opts.memoryMs;
  }
}

/**
 * How hard a worker should hold back for the studio's sake, from the API's `db-pressure` key.
 *
 * The key is set while the API's reads are slow (or its pool waits) and read here at most every
 * `pollMs`. A signal that only paces while it is up reacts too late for a run that starts while
 * the studio is busy: measured in bench `interactive-latency`, more than half of the reads over
 * their target came in the first second of each run, before the API had seen a slow second and
 * the worker had read its key. So the gauge remembers: after the key is gone the level falls back
 * from 1 to 0 over `memoryMs`, and a run that starts within that time starts paced.
 */
export class PressureGauge {
  private lastSeen = Number.NEGATIVE_INFINITY;
  private up = false;
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;

  constructor(
    private readonly read: () => Promise<boolean>,
    private readonly opts: { pollMs: number; memoryMs: number },
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * 1 while the key is up; then falling linearly to 0 over `memoryMs`; 0 when pressure was never
   * seen. A Redis that does not answer reads as no pressure (the memory still counts down).
   */
  async level(): Promise<number> {
    if (this.now() - this.readAt >= this.opts.pollMs) {
      this.reading ??= this.read()
        .catch(() => false)
        .then((up) => {
          this.up = up;
          this.readAt = this.now();
          if (up) this.lastSeen = this.readAt;
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

/**
 * Sizes chunks so a chunk transaction stays within a time budget (default 200 ms): the rows per
 * chunk follow the measured rate, shrinking at once when a chunk runs long (a busy database, a
 * wider row) and growing gently when chunks are quick.
 *
 * It aims below the budget (AIM of it): the rate it measured is an average, and the next chunk
 * may meet a checkpoint, a vacuum or a busy core. Aimed at the budget itself, half of the chunks
 * would end over it and the slow ones far over it (bench: longest chunk 587 ms of a 200 ms budget;
 * at 70% the longest was still 266–290 ms, at 60% with a first chunk of 1,000 rows 187–229 ms).
 * Those figures left out the COMMIT; timed through it, at 60% the median chunk of bench
 * worker-connections took 86–91 ms and its p99 191–248 ms, at 40% 60–64 ms and 147–176 ms. The
 * cost is more chunks: the 1M import's write pass in 374 chunks (median 72 ms), 0.46 of one COPY
 * against 0.47–0.51 at 60%.
 */
export const AIM = 0.4;
/** Growth per chunk at most: one quick chunk (a warm cache, an idle moment) is not a new rate. */
const MAX_GROWTH = 1.5;

export interface ChunkSizerOptions {
  initial: number;
  min: number;
  max: number;
  targetMs: number;
}

export class ChunkSizer {
  private current: number;

  constructor(private readonly opts: ChunkSizerOptions) {
    this.current = clamp(opts.initial, opts.min, opts.max);
  }

  get size(): number {
    return Math.round(this.current);
  }

  get targetMs(): number {
    return this.opts.targetMs;
  }

  /** Records a committed chunk of `rows` that took `ms` from BEGIN to COMMIT. */
  observe(rows: number, ms: number): void {
    // A target of 0: chunks keep their size.
    if (rows <= 0 || ms <= 0 || this.opts.targetMs <= 0) return;
    const aimMs = this.opts.targetMs * AIM;
    const ideal = (rows / ms) * aimMs;
    // Over the aim: shrink straight to what would have fitted. Under: move halfway, at most ×1.5.
    const next = ms > aimMs ? ideal : Math.min(this.current * MAX_GROWTH, (this.current + ideal) / 2);
    this.current = clamp(next, this.opts.min, this.opts.max);
  }

  /**
   * The run's chunks change kind (an import going from its validate pass, which writes only
   * claims, to its write pass): what was measured no longer applies, so start over. Keeping it, a
   * write pass began with 20,000-row chunks sized on claims, and its first chunk took 533 ms.
   */
  reset(): void {
    this.current = clamp(this.opts.initial, this.opts.min, this.opts.max);
  }

  /** The database shows pressure (a lock timeout, a waiting API pool): halve the chunk. */
  backOff(): void {
    this.current = clamp(this.current / 2, this.opts.min, this.opts.max);
  }
}

function clamp(v: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, v));
}

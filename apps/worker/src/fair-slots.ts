/**
 * The worker's job slots, shared fairly between teams (ARCHITECTURE invariant 6).
 *
 * BullMQ hands jobs over in queue order; this decides which of the jobs waiting in this process
 * runs next. The next slot goes to the waiting job whose team has used the least slot time
 * recently (usage decays with a half-life), then to interactive work before bulk work, then to
 * the earliest arrival. Usage is measured, not declared, so a team running 1M-row imports is
 * charged for them: cost weighting falls out of the measurement.
 */
export type WorkClass = 'interactive' | 'bulk';

export interface SlotRequest {
  teamId: string;
  workClass: WorkClass;
}

interface Waiter extends SlotRequest {
  seq: number;
  grant: (release: () => void) => void;
  refuse: (err: NoSlotsError) => void;
}

/** The process has no slots at all (no share of the connection budget): hand the delivery back. */
export class NoSlotsError extends Error {
  override name = 'NoSlotsError';
}

export interface FairSlotsOptions {
  size: number;
  /** How quickly past usage is forgiven. */
  halfLifeMs?: number;
  /** Plain arrival order (the baseline fair scheduling is measured against). */
  fifo?: boolean;
  now?: () => number;
}

export class FairSlots {
  private free: number;
  /** Slots to take away as runs end (the size shrank while they held them). */
  private retiring = 0;
  private seq = 0;
  private waiters: Waiter[] = [];
  private readonly usage = new Map<string, { value: number; at: number }>();
  private readonly running = new Map<string, number>();
  private readonly halfLifeMs: number;
  private readonly now: () => number;

  private readonly opts: FairSlotsOptions;

  constructor(opts: FairSlotsOptions) {
    this.opts = { ...opts };
    this.free = opts.size;
    this.halfLifeMs = opts.halfLifeMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.opts.size;
  }

  /**
   * Resizes to `size` slots (the process's share of the connection budget changed). Growing
   * starts waiting jobs at once; shrinking takes free slots first, then the slots of running jobs
   * as they end: no run is cut short.
   */
  resize(size: number): void {
    if (!Number.isInteger(size) || size < 0) throw new Error(`invalid slot count ${size}`);
    while (this.opts.size < size) {
      this.opts.size++;
      if (this.retiring > 0) {
        this.retiring--;
        continue;
      }
      const next = this.pick();
      if (next) this.start(next);
      else this.free++;
    }
    if (this.opts.size > size) {
      const cut = this.opts.size - size;
      const fromFree = Math.min(this.free, cut);
      this.free -= fromFree;
      this.retiring += cut - fromFree;
      this.opts.size = size;
    }
    // With no slots left, no waiter would ever start here.
    if (size === 0) for (const w of this.waiters.splice(0)) w.refuse(new NoSlotsError('this worker has no job slots now'));
  }

  /** Jobs running in slots now (more than `size` while a shrink waits for runs to end). */
  get inUse(): number {
    return this.opts.size + this.retiring - this.free;
  }

  /** Slot time used by a team recently, in decayed milliseconds. */
  usageOf(teamId: string): number {
    const u = this.usage.get(teamId);
    if (!u) return 0;
    return u.value * Math.pow(0.5, (this.now() - u.at) / this.halfLifeMs);
  }

  private charge(teamId: string, ms: number): void {
    this.usage.set(teamId, { value: this.usageOf(teamId) + ms, at: this.now() });
  }

  /**
   * True when a job of another team (or interactive work of the same team, for bulk work) is
   * waiting here: the run holding a slot should yield at its next chunk boundary.
   */
  shouldYield(holder: SlotRequest): boolean {
    return this.waiters.some(
      (w) => w.teamId !== holder.teamId || (holder.workClass === 'bulk' && w.workClass === 'interactive'),
    );
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** A slot, once one is free; refused at once (NoSlotsError) while the size is 0. */
  acquire(req: SlotRequest): Promise<() => void> {
    return new Promise((resolve, reject) => {
      if (this.opts.size === 0) return reject(new NoSlotsError('this worker has no job slots now'));
      const waiter: Waiter = { ...req, seq: this.seq++, grant: resolve, refuse: reject };
      if (this.free > 0) {
        this.free--;
        this.start(waiter);
      } else {
        this.waiters.push(waiter);
      }
    });
  }

  private start(w: Waiter): void {
    const startedAt = this.now();
    this.running.set(w.teamId, (this.running.get(w.teamId) ?? 0) + 1);
    let released = false;
    w.grant(() => {
      if (released) return;
      released = true;
      this.charge(w.teamId, Math.max(1, this.now() - startedAt));
      const n = (this.running.get(w.teamId) ?? 1) - 1;
      if (n > 0) this.running.set(w.teamId, n);
      else this.running.delete(w.teamId);
      if (this.retiring > 0) {
        this.retiring--;
        return;
      }
      const next = this.pick();
      if (next) this.start(next);
      else this.free++;
    });
  }

  private pick(): Waiter | undefined {
    if (this.waiters.length === 0) return undefined;
    let best = 0;
    let bestKey = this.key(this.waiters[0]!);
    for (let i = 1; i < this.waiters.length; i++) {
      const k = this.key(this.waiters[i]!);
      if (k[0] < bestKey[0] || (k[0] === bestKey[0] && (k[1] < bestKey[1] || (k[1] === bestKey[1] && k[2] < bestKey[2])))) {
        best = i;
        bestKey = k;
      }
    }
    return this.waiters.splice(best, 1)[0];
  }

  /** Order: teams holding fewer slots now, then less recent usage, interactive first, then arrival. */
  private key(w: Waiter): [number, number, number] {
    if (this.opts.fifo) return [0, 0, w.seq];
    const running = this.running.get(w.teamId) ?? 0;
    // Slots held now dominate; recent usage breaks ties between teams holding as many.
    return [running * 1e12 + this.usageOf(w.teamId), w.workClass === 'interactive' ? 0 : 1, w.seq];
  }
}

import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { schema, type Database, type Db, type JobRow } from '@platform/db';
import type { ChunkSizer } from './chunk-sizer';
import { CheckpointLostError, FencedError, InjectedFault, StopRun, type StopReason } from './errors';

export interface ChunkTimeouts {
  /** `SET LOCAL lock_timeout`: a chunk never queues long behind someone else's lock. */
  lockTimeoutMs: number;
  /** `SET LOCAL statement_timeout`: a runaway statement is cut off, the chunk rolls back and is retried. */
  statementTimeoutMs: number;
}

/** Test-only fault injection, enabled by the worker's configuration alone. */
export interface ChunkFault {
  /** Which chunk (its 1-based sequence number) to break, after its writes and before its commit. */
  atChunk: number;
  action: 'throw' | 'kill';
}

export interface ChunkRunnerOptions extends ChunkTimeouts {
  fault?: ChunkFault;
  /** Adapts rows per chunk to the chunk-time budget; processors read it through `ctx.chunkSize`. */
  sizer?: ChunkSizer;
  /** Awaited before each chunk: slows the run down while the database shows pressure. */
  pace?: () => Promise<void>;
  /**
   * Asked at each chunk: commit it with `synchronous_commit = off` (see `commit`). Default: no.
   */
  asyncCommit?: () => boolean;
  /**
   * Asked at each chunk with `parts`: may it be cut short after a part? When no, a chunk with
   * `write` too is written by that (a part is a statement of its own: a COPY cost ~2.5 ms more
   * split in 8), one without by all its parts. Default: yes.
   */
  split?: () => boolean;
  /** Asked at every chunk boundary: a reason to stop (shutdown, fairness yield, …) or null. */
  shouldStop?: () => StopReason | null;
}

export interface ChunkWriter {
  /** Drizzle bound to the chunk's transaction. */
  db: Db;
  /** The raw connection of the transaction, for COPY and other driver-level work. */
  client: pg.PoolClient;
  /**
   * The statements that open the chunk's transaction while they are not sent yet (a chunk that
   * `opensWithCopy`): the first COPY of the chunk sends them ahead of itself, in one query, and
   * clears this (`runCopyIn`).
   */
  opening?: string;
}

/** Where a job stands once a chunk (or the first parts of one) is committed. */
export interface ChunkEnd<C> {
  /** The checkpoint once this chunk is committed. */
  checkpoint: C;
  /** Progress once this chunk is committed. */
  done: number;
  total?: number | null;
  /** Rows (or operations) this chunk covers, for the chunk timeline. */
  rows: number;
}

/** A leading part of a chunk's writes, and where the job stands when the chunk ends after it. */
export interface ChunkPart<C> {
  write: (w: ChunkWriter) => Promise<void>;
  end: ChunkEnd<C>;
}

export interface Chunk<C> extends ChunkEnd<C> {
  /** The chunk's writes; runs inside the chunk transaction. Absent for a checkpoint-only chunk. */
  write?: (w: ChunkWriter) => Promise<void>;
  /**
   * Its first statement, whole or in parts, is a `runCopyIn` given the writer: the transaction's
   * opening statements then go with it, one round trip fewer (see `ChunkWriter.opening`).
   */
  opensWithCopy?: boolean;
  /**
   * The chunk's writes in parts, in order, the last one ending where the chunk does. When the
   * chunk's time runs short after a part, the runner commits the parts written so far with that
   * part's `end` (see `cutAfter`), and the parts left in a chunk of their own; only when its
   * `split` option says so (otherwise it writes `write`, the same writes at once in fewer
   * statements, or every part). The last part's `end` must be the chunk's own.
   */
  parts?: ChunkPart<C>[];
}

/** A chunk written in `parts` (and whole by `write`, when given): it ends where its last part does. */
export function chunkOfParts<C>(parts: ChunkPart<C>[], write?: Chunk<C>['write'], opensWithCopy?: boolean): Chunk<C> {
  return { ...parts[parts.length - 1]!.end, parts, write, opensWithCopy };
}

/** A chunk is written in at most this many parts, */
const MAX_PARTS = 4;
/** of at least this many rows each (a part costs a statement, a round trip). */
const MIN_PART_ROWS = 250;

/**
 * How to split `n` rows of a chunk into parts (`Chunk.parts`): the end (exclusive) of each part,
 * in order, the last one `n`. Parts are nearly equal, so the runner can judge from the first ones
 * how long the next would take.
 */
export function partEnds(n: number): number[] {
  const parts = Math.max(1, Math.min(MAX_PARTS, Math.floor(n / MIN_PART_ROWS)));
  return Array.from({ length: parts }, (_, i) => Math.round(((i + 1) * n) / parts));
}

/**
 * A chunk written in parts ends early when its next part would take it past this share of its
 * budget. The rest is for what cannot be cut: the part under way and the COMMIT, either of which
 * can stall 100–200 ms on a busy machine (bench worker-connections, two shared vCPUs).
 */
const CUT_AT = 0.5;

let faultFired = false;

/**
 * The error `checkpointSql` raises when its guard matched no row: a cast of this text to integer
 * (SQLSTATE 22P02, invalid_text_representation), told apart from any other error by the text.
 */
const GUARD_FAILED = 'chunk guard: the lease or chunk sequence moved on';

/** The run's lease or chunk sequence is no longer the job's (rolled back; told apart after). */
class NotCurrent extends Error {}

/**
 * One run of a job, holding the lease it was claimed with. Every chunk is one short transaction:
 * `SET LOCAL` timeouts, the chunk's writes, then the checkpoint advanced in the same transaction,
 * guarded by the lease and chunk sequence the run started from. A guard that matches no row means
 * the run is stale; the transaction rolls back and nothing of the chunk is kept.
 */
export class JobRun<C = unknown> {
  readonly jobId: string;
  readonly teamId: string;
  readonly lease: number;
  chunkSeq: number;
  checkpoint: C | null;
  /** Longest chunk transaction of this run, in ms (for logs and benchmarks). */
  longestChunkMs = 0;
  /** The run's last committed chunk and its worker-side time, not yet in its timeline row. */
  private unsettled?: { seq: number; ms: number };

  constructor(
    private readonly database: Database,
    row: JobRow,
    private readonly opts: ChunkRunnerOptions,
  ) {
    this.jobId = row.id;
    this.teamId = row.teamId;
    this.lease = row.lease;
    this.chunkSeq = row.chunkSeq;
    this.checkpoint = (row.checkpoint as C | null) ?? null;
  }

  /** Throws StopRun when the run must stop here; call between chunks. */
  boundary(cancelRequested = false): void {
    if (cancelRequested) throw new StopRun('cancelled');
    const reason = this.opts.shouldStop?.();
    if (reason) throw new StopRun(reason);
  }

  /** Commits the chunk, or its first parts (see `Chunk.parts`); returns where the job now stands. */
  async commit(chunk: Chunk<C>): Promise<ChunkEnd<C>> {
    if (this.opts.pace) await this.opts.pace();
    let end: ChunkEnd<C> = chunk;
    const client = await this.database.pool.connect();
    // The transaction's time, from BEGIN: waiting for a pooled connection holds no lock.
    const started = performance.now();
    const writes = !!(chunk.write || chunk.parts);
    let cancelRequested = false;
    let release: ((err?: Error) => void) | undefined = client.release.bind(client);
    try {
      try {
        // One round trip to open the transaction: under a busy event loop every round trip of a
        // chunk waits its turn, with the transaction's locks held (bench worker-connections).
        // With `asyncCommit`, `synchronous_commit = off`: the COMMIT does not wait for its WAL to
        // reach the disk. A PostgreSQL crash may then lose the last chunks committed, writes and
        // checkpoint together: the job resumes at an earlier checkpoint and stays exact (the run
        // that committed them finds out at its next chunk: CheckpointLostError); anything that
        // ends the job commits synchronously, which flushes every chunk committed before it.
        const async = this.opts.asyncCommit?.() ? '; set local synchronous_commit = off' : '';
        const opening = `begin; set local lock_timeout = ${Math.trunc(this.opts.lockTimeoutMs)}; set local statement_timeout = ${Math.trunc(this.opts.statementTimeoutMs)}${async}`;
        // Sent with the chunk's first COPY when it opens with one: a busy event loop delayed the
        // answer to a BEGIN of its own by up to 100 ms, the transaction open meanwhile.
        const deferred = writes && !!chunk.opensWithCopy;
        if (!deferred) await client.query(opening);
        const writer = writes ? chunkWriter(client, deferred ? opening : undefined) : undefined;
        const split = (this.opts.split?.() ?? true) && this.worthSplitting(chunk);
        const parts = chunk.parts && (split || !chunk.write) ? chunk.parts : [];
        if (chunk.write && parts.length === 0) await chunk.write(writer!);
        for (let i = 0; i < parts.length; i++) {
          await parts[i]!.write(writer!);
          if (split && i < parts.length - 1 && this.cutAfter(i + 1, performance.now() - started)) {
            end = parts[i]!.end;
            break;
          }
        }
        this.maybeFault();
        const seq = this.chunkSeq + 1;
        // The guarded checkpoint, the chunk's timeline row and the COMMIT in one round trip: on a
        // busy machine each round trip of a chunk waits for a core with the transaction open.
        // A chunk that sent no statement (its parts held nothing to write) opens here.
        const pending = writer?.opening ? `${writer.opening};\n` : '';
        const results = (await client.query(pending + this.checkpointSql(client, end, seq)).catch((err: unknown) => {
          const e = err as { code?: string; message?: string };
          throw e.code === '22P02' && e.message?.includes(GUARD_FAILED) ? new NotCurrent() : err;
        })) as unknown as pg.QueryResult<{ cancel_requested_at: Date | null }>[];
        cancelRequested = results.at(-2)!.rows[0]!.cancel_requested_at !== null;
        this.chunkSeq = seq;
        this.checkpoint = end.checkpoint;
      } catch (err) {
        await client.query('rollback').catch(() => {
          // The connection is broken; drop it from the pool instead of reusing it.
          release?.(err as Error);
          release = undefined;
        });
        throw err;
      }
    } catch (err) {
      release?.();
      release = undefined;
      // Asked after the connection is back in the pool: a pool of one must not wait on itself.
      if (err instanceof NotCurrent) {
        await this.throwIfCheckpointLost();
        throw new FencedError(`job ${this.jobId}: lease ${this.lease} / chunk ${this.chunkSeq} is no longer current`);
      }
      if (!(err instanceof FencedError) && !(err instanceof CheckpointLostError) && !(err instanceof InjectedFault) && (await this.isStale())) {
        // A write failed because another run moved on (it wrote the same rows): report the fencing.
        throw new FencedError(`job ${this.jobId}: lease ${this.lease} is no longer current`, { cause: err });
      }
      throw err;
    } finally {
      release?.();
    }
    const took = performance.now() - started;
    this.longestChunkMs = Math.max(this.longestChunkMs, took);
    this.unsettled = { seq: this.chunkSeq, ms: Math.round(took) };
    if (writes) this.opts.sizer?.observe(end.rows, took);
    this.boundary(cancelRequested);
    return end;
  }

  /**
   * The statements that end a chunk, as one simple query (its values are literals): the checkpoint
   * advanced under the guard of the lease and chunk sequence the run holds, the chunk's row in the
   * timeline, the previous chunk's worker-side time settled, then COMMIT. When the guard matches no
   * row (a stale run), the statement casts GUARD_FAILED to an integer: the error aborts the
   * transaction before its COMMIT.
   *
   * A timeline row's `duration_ms` is the transaction by PostgreSQL's clock, from its BEGIN to this
   * statement (`clock_timestamp() - now()`; the COMMIT follows without a round trip). Its
   * `worker_ms`, the chunk as the worker timed it through the answer to its COMMIT, is only known
   * after it: the next chunk's statement (or `settleTimeline` when the run ends) writes it.
   */
  private checkpointSql(client: pg.PoolClient, end: ChunkEnd<C>, seq: number): string {
    const int = (n: number) => {
      if (!Number.isSafeInteger(n)) throw new Error(`not an integer: ${n}`);
      return String(n);
    };
    const id = client.escapeLiteral(this.jobId);
    const total = end.total === undefined ? 'progress_total' : end.total === null ? 'null' : int(end.total);
    const prev = this.unsettled;
    return `with cp as (
         update jobs set checkpoint = ${end.checkpoint === undefined ? 'null' : `${client.escapeLiteral(JSON.stringify(end.checkpoint))}::jsonb`}, chunk_seq = ${int(seq)},
           progress_done = ${int(end.done)}, progress_total = ${total}, updated_at = now()
         where id = ${id} and lease = ${int(this.lease)} and chunk_seq = ${int(this.chunkSeq)} and status = 'active'
         returning cancel_requested_at
       ), timeline as (
         insert into job_chunks (job_id, seq, lease, rows, duration_ms)
         select ${id}, ${int(seq)}, ${int(this.lease)}, ${int(end.rows)}, round(extract(epoch from clock_timestamp() - now()) * 1000) from cp
       )${
         prev
           ? `, settled as (
         update job_chunks set worker_ms = ${int(prev.ms)} where job_id = ${id} and seq = ${int(prev.seq)} and lease = ${int(this.lease)} and exists (select 1 from cp)
       )`
           : ''
       }
       select max(cancel_requested_at) as cancel_requested_at,
              case when count(*) = 0 then (${client.escapeLiteral(`${GUARD_FAILED} `)} || count(*))::int end as guard
       from cp;
       commit`;
  }

  /**
   * Writes the worker-side time of the run's last committed chunk into its timeline row
   * (see `checkpointSql`); a row of another lease is left alone (a chunk lost in a PostgreSQL crash
   * may have been committed again by the next run). Call once the run's chunks are over, before the
   * job ends or is handed on; the timeline only, so a failure is ignored.
   */
  async settleTimeline(): Promise<void> {
    const prev = this.unsettled;
    if (!prev) return;
    this.unsettled = undefined;
    await this.database.pool
      .query('update job_chunks set worker_ms = $1 where job_id = $2 and seq = $3 and lease = $4', [prev.ms, this.jobId, prev.seq, this.lease])
      .catch(() => {});
  }

  /**
   * Every chunk with parts is written in parts under a chunk-time budget, even one expected to be
   * quick: a stall can meet any chunk. A validate pass's 10,000 claims, ~30 ms whole, took
   * 229–532 ms whole in bench worker-connections; the cost is a COPY per part (the 1M import's
   * validate pass spent 2.3 s in transactions, against 1.4 s with its claims whole).
   */
  private worthSplitting(chunk: Chunk<C>): boolean {
    return !!chunk.parts && !!this.opts.sizer?.targetMs;
  }

  /**
   * After `done` parts written in `elapsedMs`: end the chunk here when one more part, at the pace
   * of those, would take it past CUT_AT of the chunk-time budget (the rest of the budget is for the
   * checkpoint statement, which waits its turn on a busy database and event loop too). A chunk is
   * sized from the rates of the ones before it; one that meets company mid-flight (another run
   * starting, a checkpoint) slows 2–4× and ran to 400–660 ms in bench worker-connections. Ended
   * after a part, it commits what it wrote.
   */
  private cutAfter(done: number, elapsedMs: number): boolean {
    const budget = this.opts.sizer?.targetMs;
    // No budget (0: chunks of a fixed size) cuts nothing.
    return !!budget && elapsedMs + elapsedMs / done > budget * CUT_AT;
  }

  /**
   * Throws CheckpointLostError when the job's row holds this run's lease but an earlier chunk than
   * the run committed (asynchronous commits lost in a PostgreSQL crash); returns otherwise.
   */
  async throwIfCheckpointLost(db: Pick<pg.Pool, 'query'> = this.database.pool): Promise<void> {
    const now = await db.query<{ lease: number; chunk_seq: number; status: string }>('select lease, chunk_seq, status from jobs where id = $1', [
      this.jobId,
    ]);
    const row = now.rows[0];
    if (row && row.lease === this.lease && row.status === 'active' && row.chunk_seq < this.chunkSeq) {
      throw new CheckpointLostError(`job ${this.jobId}: chunks ${row.chunk_seq + 1}–${this.chunkSeq} of lease ${this.lease} were lost`);
    }
  }

  /** True when another run holds the job now, or it ended; false when that cannot be told. */
  private async isStale(): Promise<boolean> {
    try {
      const r = await this.database.pool.query<{ lease: number; status: string }>(
        'select lease, status from jobs where id = $1',
        [this.jobId],
      );
      const row = r.rows[0];
      return !row || row.lease !== this.lease || row.status !== 'active';
    } catch {
      return false;
    }
  }

  private maybeFault(): void {
    const f = this.opts.fault;
    if (!f || faultFired || this.chunkSeq + 1 !== f.atChunk) return;
    faultFired = true;
    if (f.action === 'kill') process.kill(process.pid, 'SIGKILL');
    throw new InjectedFault(`injected fault inside chunk ${f.atChunk}`);
  }
}

/**
 * What a chunk's writes get: its connection, and Drizzle on it. With `opening` (statements not
 * sent yet that open the transaction), the connection is `openingFirst`'s.
 */
function chunkWriter(client: pg.PoolClient, opening?: string): ChunkWriter {
  const w = { client, opening } as ChunkWriter;
  if (opening !== undefined) w.client = openingFirst(client, w);
  w.db = drizzle(w.client, { schema });
  return w;
}

/**
 * The connection a chunk's writes get while its opening statements wait for its first COPY
 * (`ChunkWriter.opening`): any other statement sent first (Drizzle, a plain query) sends them
 * ahead of itself, so no write of a chunk runs outside its transaction. A COPY or other streamed
 * query must go through `runCopyIn` with the writer, which takes them itself.
 */
function openingFirst(client: pg.PoolClient, writer: ChunkWriter): pg.PoolClient {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  return new Proxy(client, {
    get(target, prop) {
      if (prop !== 'query') {
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      }
      return (...args: unknown[]) => {
        const opening = writer.opening;
        if (opening === undefined) return query(...args);
        if (typeof (args[0] as { submit?: unknown } | undefined)?.submit === 'function') {
          throw new Error("a chunk that opens with a COPY sends it through runCopyIn with the chunk's writer");
        }
        writer.opening = undefined;
        return (query(opening) as Promise<unknown>).then(() => query(...args));
      };
    },
  });
}

/**
 * Drives a run to the end: asks `plan` for the next chunk (reads happen there, outside any
 * transaction), commits it, and repeats until `plan` returns null. Starts from `from`: the run's
 * committed checkpoint as the processor reads it (an export converts one of an older shape: the
 * run's raw checkpoint would bypass that), or where a first run starts. A chunk with `parts` cut
 * short commits the parts left as the next chunk (then maybe cut again): `plan` is always asked
 * from the end of the chunk it planned last.
 *
 * `ahead`: when it answers yes (asked at each chunk), plan the next chunk while this one commits,
 * from the checkpoint this one will commit, so the process parses and encodes while PostgreSQL
 * writes (the import's write pass spent a third of its time between transactions without it).
 * Only for a `plan` that reads nothing an earlier chunk of the run writes; a plan made for a chunk
 * that then fails to commit is dropped.
 */
export async function runChunks<C>(
  run: JobRun<C>,
  from: C,
  plan: (checkpoint: C) => Promise<Chunk<C> | null>,
  opts: { ahead?: () => boolean } = {},
): Promise<C> {
  let cp = from;
  let chunk = await plan(cp);
  // Planned from the end of the chunk last planned, while that one (or what is left of it) commits.
  let planned: Promise<Chunk<C> | null> | undefined;
  for (;;) {
    if (!chunk) return cp;
    if (!planned && opts.ahead?.()) {
      planned = plan(chunk.checkpoint);
      // Dropped unread when this chunk's commit fails (its error then is the run's, not news).
      planned.catch(() => {});
    }
    const end = await run.commit(chunk);
    cp = end.checkpoint;
    if (end !== chunk) {
      // Cut short: the parts left are the next chunk, already planned and encoded.
      chunk = restOf(chunk, end);
      continue;
    }
    chunk = await (planned ?? plan(cp));
    planned = undefined;
  }
}

/** The parts of `chunk` after the one that ends at `end`, as a chunk of their own. */
function restOf<C>(chunk: Chunk<C>, end: ChunkEnd<C>): Chunk<C> {
  const parts = chunk.parts ?? [];
  const at = parts.findIndex((p) => p.end === end);
  if (at < 0 || at === parts.length - 1) throw new Error('a cut chunk ends at none of its parts but the last');
  return chunkOfParts(
    parts.slice(at + 1).map((p) => ({ write: p.write, end: { ...p.end, rows: p.end.rows - end.rows } })),
    undefined,
    chunk.opensWithCopy,
  );
}

import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sql } from 'drizzle-orm';
import {
  claimJob,
  createCmsTable,
  createProject,
  createTeam,
  insertJob,
  isTransientDbError,
  requestCancel,
  uuidv7,
  type JobRow,
} from '@platform/db';
import { CheckpointLostError, FencedError, InjectedFault, StopRun } from '@platform/jobs';
import { JobRun, runChunks } from '@platform/jobs/processors';
import { ChunkSizer } from '../src/chunk-sizer';
import { insertRows, insertRowsCopy } from '../src/cms/row-writes';
import { runCopyIn } from '../src/cms/copy-in';
import type { ChunkWriter } from '../src/chunk-runner';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let teamId: string;
let table: { id: string; teamId: string };
const timeouts = { lockTimeoutMs: 300, statementTimeoutMs: 5_000 };

beforeAll(async () => {
  t = await createTestEnv();
  const db = t.database.db;
  teamId = (await createTeam(db, 'chunky')).id;
  const project = await createProject(db, teamId, 'p');
  const tbl = await createCmsTable(db, { teamId, projectId: project.id, name: 't', fields: [{ name: 'n', type: 'number' }] });
  table = { id: tbl.id, teamId };
});
afterAll(async () => t?.cleanup());

let job: JobRow;
beforeEach(async () => {
  job = await insertJob(t.database.db, {
    id: uuidv7(),
    teamId,
    type: 'cms.bulk_write',
    queue: 'cms-bulk-write',
    payload: {},
    lockKeys: [`test:${uuidv7()}`],
  });
});

async function claim(): Promise<JobRow> {
  const c = await claimJob(t.database.db, job.id, 'test');
  if (c.kind !== 'claimed') throw new Error(`expected a claim, got ${c.kind}`);
  return c.job;
}

async function state() {
  const rows = await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1', [table.id]);
  const j = await t.database.pool.query('select chunk_seq, checkpoint, progress_done::int as progress_done from jobs where id = $1', [job.id]);
  const chunks = await t.database.pool.query('select seq, lease from job_chunks where job_id = $1 order by seq', [job.id]);
  return { rows: rows.rows[0].n as number, job: j.rows[0], chunks: chunks.rows };
}

const rowsChunk = (n: number, cp: { at: number }) => ({
  checkpoint: { at: cp.at + n },
  done: cp.at + n,
  total: 100,
  rows: n,
  write: async ({ client }: { client: import('pg').PoolClient }) => {
    await insertRows(client, table, Array.from({ length: n }, (_, i) => ({ data: { n: cp.at + i } })));
  },
});

/** A chunk of `n` rows written by one COPY that opens its transaction (`Chunk.opensWithCopy`). */
const copyChunk = (n: number, cp: { at: number }, o: { fail?: boolean; seen?: string[] } = {}) => ({
  checkpoint: { at: cp.at + n },
  done: cp.at + n,
  rows: n,
  opensWithCopy: true,
  write: async (w: ChunkWriter) => {
    expect(w.opening).toMatch(/^begin; set local lock_timeout = 300/);
    const copy = await insertRowsCopy(table, Array.from({ length: n }, (_, i) => ({ identifier: `c${uuidv7()}`, data: { n: cp.at + i } })));
    expect(await runCopyIn(w.client, copy, w)).toBe(n);
    o.seen?.push((await w.client.query<{ s: string }>(`select current_setting('lock_timeout') as s`)).rows[0]!.s);
    if (o.fail) throw new Error('boom after the writes');
  },
});

describe('chunk runner', () => {
  it('commits the writes, the checkpoint, the progress and a timeline entry together', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    const before = (await state()).rows;
    await run.commit(rowsChunk(10, { at: 0 }));
    await run.commit(rowsChunk(10, { at: 10 }));
    const s = await state();
    expect(s.rows - before).toBe(20);
    expect(s.job).toMatchObject({ chunk_seq: 2, checkpoint: { at: 20 }, progress_done: 20 });
    expect(s.chunks).toEqual([{ seq: 1, lease: 1 }, { seq: 2, lease: 1 }]);
  });

  it('leaves neither rows nor checkpoint behind when a chunk fails inside its transaction', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await run.commit(rowsChunk(5, { at: 0 }));
    const before = await state();
    const failing = {
      ...rowsChunk(7, { at: 5 }),
      write: async (w: { client: import('pg').PoolClient }) => {
        await rowsChunk(7, { at: 5 }).write(w);
        throw new Error('boom after the writes');
      },
    };
    await expect(run.commit(failing)).rejects.toThrow('boom after the writes');
    const after = await state();
    expect(after.rows).toBe(before.rows);
    expect(after.job).toEqual(before.job);
    expect(after.chunks).toEqual(before.chunks);
    expect(run.chunkSeq).toBe(1);
  });

  it('injected faults (test hook) fire once, inside the chosen chunk, and roll it back', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, fault: { atChunk: 2, action: 'throw' } });
    await run.commit(rowsChunk(3, { at: 0 }));
    const before = await state();
    await expect(run.commit(rowsChunk(3, { at: 3 }))).rejects.toBeInstanceOf(InjectedFault);
    expect(await state()).toEqual(before);
    await run.commit(rowsChunk(3, { at: 3 }));
    expect((await state()).job.chunk_seq).toBe(2);
  });

  it('fences out a stale run: once a new run holds the lease, the old one commits nothing', async () => {
    const stale = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await stale.commit(rowsChunk(4, { at: 0 }));
    const fresh = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    expect(fresh.lease).toBe(stale.lease + 1);
    expect(fresh.checkpoint).toEqual({ at: 4 });
    const before = await state();
    await expect(stale.commit(rowsChunk(4, { at: 4 }))).rejects.toBeInstanceOf(FencedError);
    expect(await state()).toEqual(before);
    await fresh.commit(rowsChunk(4, { at: 4 }));
    const after = await state();
    expect(after.rows - before.rows).toBe(4);
    expect(after.chunks.map((c: { lease: number }) => c.lease)).toEqual([1, 2]);
  });

  it("records each chunk's transaction by PostgreSQL's clock, and as the worker timed it through its COMMIT", async () => {
    // A deferred trigger that sleeps at COMMIT, for this job's chunks only: time after the
    // checkpoint statement, which the worker's timing sees and PostgreSQL's clock in it cannot.
    const fn = `slow_commit_${job.id.replaceAll('-', '')}`;
    await t.database.pool.query(`create function ${fn}() returns trigger language plpgsql as $$ begin perform pg_sleep(0.3); return null; end $$`);
    await t.database.pool.query(
      `create constraint trigger ${fn} after insert on job_chunks deferrable initially deferred for each row when (new.job_id = '${job.id}') execute function ${fn}()`,
    );
    try {
      const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
      const timeline = async () =>
        (await t.database.pool.query<{ d: number; w: number | null }>('select duration_ms as d, worker_ms as w from job_chunks where job_id = $1 order by seq', [job.id])).rows;
      // 200 ms inside the transaction, before the checkpoint statement: on both clocks.
      const slowChunk = (cp: { at: number }) => ({
        ...rowsChunk(2, cp),
        write: async (w: ChunkWriter) => {
          await rowsChunk(2, cp).write(w);
          await w.client.query('select pg_sleep(0.2)');
        },
      });
      await run.commit(slowChunk({ at: 0 }));
      const first = Math.round(run.longestChunkMs);
      expect(first).toBeGreaterThanOrEqual(500);
      let rows = await timeline();
      expect(rows[0]!.d).toBeGreaterThanOrEqual(200);
      expect(rows[0]!.d).toBeLessThan(500);
      // The worker's time is known after the COMMIT: written by the next chunk.
      expect(rows[0]!.w).toBeNull();
      await run.commit(rowsChunk(2, { at: 2 }));
      rows = await timeline();
      expect(rows[0]!.w).toBe(first);
      expect(rows[1]!.w).toBeNull();
      // The last chunk's when the run ends.
      await run.settleTimeline();
      rows = await timeline();
      expect(rows[0]!.w).toBe(first);
      expect(rows[1]!.d).toBeLessThan(300);
      expect(rows[1]!.w).toBeGreaterThanOrEqual(300);
    } finally {
      await t.database.pool.query(`drop trigger ${fn} on job_chunks; drop function ${fn}()`);
    }
  });

  it('a chunk that opens with a COPY sends BEGIN with it: its writes and checkpoint commit together, or neither', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    const seen: string[] = [];
    const before = await state();
    await run.commit(copyChunk(3, { at: 0 }, { seen }));
    expect(seen).toEqual(['300ms']);
    const after = await state();
    expect(after.rows - before.rows).toBe(3);
    expect(after.job).toMatchObject({ chunk_seq: 1, checkpoint: { at: 3 } });
    await expect(run.commit(copyChunk(3, { at: 3 }, { fail: true }))).rejects.toThrow('boom after the writes');
    expect(await state()).toEqual(after);
    // A chunk whose writes sent nothing still opens its transaction, with the checkpoint statement.
    await run.commit({ checkpoint: { at: 9 }, done: 9, rows: 0, opensWithCopy: true, write: async () => {} });
    expect((await state()).job).toMatchObject({ chunk_seq: 2, checkpoint: { at: 9 } });
  });

  it('a chunk that opens with a COPY but sends another statement first still writes inside its transaction', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    const before = await state();
    const seen: string[] = [];
    const plainFirst = (fail: boolean) => ({
      checkpoint: { at: 2 },
      done: 2,
      rows: 2,
      opensWithCopy: true,
      write: async (w: ChunkWriter) => {
        await insertRows(w.client, table, [{ data: { n: 1 } }, { data: { n: 2 } }]);
        seen.push((await w.client.query<{ s: string }>(`select current_setting('lock_timeout') as s`)).rows[0]!.s);
        if (fail) throw new Error('boom after the insert');
      },
    });
    await expect(run.commit(plainFirst(true))).rejects.toThrow('boom after the insert');
    expect(await state()).toEqual(before);
    await run.commit(plainFirst(false));
    expect((await state()).rows - before.rows).toBe(2);
    expect(seen).toEqual(['300ms', '300ms']);
  });

  it('fences out a stale run whose chunk opens with a COPY: the COPY is not kept', async () => {
    const stale = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await stale.commit(copyChunk(2, { at: 0 }));
    const fresh = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    const before = await state();
    await expect(stale.commit(copyChunk(2, { at: 2 }))).rejects.toBeInstanceOf(FencedError);
    await expect(stale.commit({ checkpoint: { at: 9 }, done: 9, rows: 0, opensWithCopy: true, write: async () => {} })).rejects.toBeInstanceOf(
      FencedError,
    );
    expect(await state()).toEqual(before);
    await fresh.commit(copyChunk(2, { at: 2 }));
    expect((await state()).rows - before.rows).toBe(2);
  });

  it("a stale run's timeline settling leaves the rows of the run after it alone", async () => {
    const old = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await old.commit(rowsChunk(1, { at: 0 }));
    // Its chunk 1 lost (as in a PostgreSQL crash under asynchronous commits): the next run commits a chunk 1 of its own.
    await t.database.pool.query('delete from job_chunks where job_id = $1', [job.id]);
    await t.database.pool.query('update jobs set chunk_seq = 0, checkpoint = null where id = $1', [job.id]);
    const next = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await next.commit(rowsChunk(1, { at: 0 }));
    await t.database.pool.query('update job_chunks set worker_ms = 4242 where job_id = $1', [job.id]);
    await old.settleTimeline();
    const rows = await t.database.pool.query('select seq, lease, worker_ms from job_chunks where job_id = $1', [job.id]);
    expect(rows.rows).toEqual([{ seq: 1, lease: next.lease, worker_ms: 4242 }]);
  });

  it('refuses a replayed chunk: the checkpoint guard must match the sequence the chunk started from', async () => {
    const row = await claim();
    const a = new JobRun<{ at: number }>(t.database, row, timeouts);
    const b = new JobRun<{ at: number }>(t.database, row, timeouts); // same lease, same starting point
    await a.commit(rowsChunk(2, { at: 0 }));
    const before = await state();
    await expect(b.commit(rowsChunk(2, { at: 0 }))).rejects.toBeInstanceOf(FencedError);
    expect(await state()).toEqual(before);
  });

  it('commits a chunk without waiting for its WAL flush only when asked to, chunk by chunk', async () => {
    let asked = false;
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, asyncCommit: () => asked });
    const seen: string[] = [];
    const probe = (at: number) => ({
      ...rowsChunk(1, { at }),
      write: async ({ client }: { client: import('pg').PoolClient }) => {
        seen.push((await client.query<{ s: string }>(`select current_setting('synchronous_commit') as s`)).rows[0]!.s);
      },
    });
    await run.commit(probe(0));
    asked = true;
    await run.commit(probe(1));
    asked = false;
    await run.commit(probe(2));
    expect(seen).toEqual(['on', 'off', 'on']);
    // SET LOCAL: the pooled connection keeps the server's default afterwards.
    expect((await t.database.pool.query<{ s: string }>(`select current_setting('synchronous_commit') as s`)).rows[0]!.s).toBe('on');
  });

  it('tells a run whose last chunks PostgreSQL lost (same lease, earlier checkpoint) from a fenced one, and commits nothing', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await run.commit(rowsChunk(3, { at: 0 }));
    const kept = await state();
    await run.commit(rowsChunk(3, { at: 3 }));
    // What a crash before chunk 2's WAL flush leaves (chunk transactions commit asynchronously):
    // the row, the rows and the timeline as they were after chunk 1.
    await t.database.pool.query(
      `with r as (delete from cms_rows where table_id = $1 and id in (select id from cms_rows where table_id = $1 order by id desc limit 3)),
            c as (delete from job_chunks where job_id = $2 and seq = 2)
       update jobs set chunk_seq = 1, checkpoint = $3::jsonb, progress_done = $4 where id = $2`,
      [table.id, job.id, JSON.stringify(kept.job.checkpoint), kept.job.progress_done],
    );
    expect(await state()).toEqual(kept);
    await expect(run.commit(rowsChunk(3, { at: 6 }))).rejects.toBeInstanceOf(CheckpointLostError);
    expect(await state()).toEqual(kept);
    // A new run resumes from what the row kept.
    const next = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    expect(next.checkpoint).toEqual({ at: 3 });
    await next.commit(rowsChunk(3, { at: 3 }));
    expect((await state()).rows).toBe(kept.rows + 3);
  });

  it('stops at the boundary after a cancellation is requested, keeping the committed chunk', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    await requestCancel(t.database.db, job.id);
    const err = await run.commit(rowsChunk(2, { at: 0 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StopRun);
    expect((err as StopRun).reason).toBe('cancelled');
    expect((await state()).job.chunk_seq).toBe(1);
  });

  it('sets lock_timeout and statement_timeout locally: a chunk blocked by a lock fails fast and is transient', async () => {
    const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
    const seen: string[] = [];
    await run.commit({
      checkpoint: { at: 0 },
      done: 0,
      rows: 0,
      write: async ({ db }) => {
        const r = await db.execute<{ l: string; s: string }>(sql`select current_setting('lock_timeout') as l, current_setting('statement_timeout') as s`);
        seen.push(r.rows[0]!.l, r.rows[0]!.s);
      },
    });
    expect(seen).toEqual(['300ms', '5s']);
    // Outside the chunk transaction the session keeps its defaults (SET LOCAL only).
    const outside = await t.database.pool.query(`select current_setting('lock_timeout') as l`);
    expect(outside.rows[0].l).toBe('0');

    const holder = await t.database.pool.connect();
    try {
      await holder.query('begin');
      await holder.query('lock table cms_rows in access exclusive mode');
      const started = Date.now();
      const err = await run.commit(rowsChunk(1, { at: 0 })).catch((e: unknown) => e);
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(isTransientDbError(err)).toBe(true);
    } finally {
      await holder.query('rollback');
      holder.release();
    }
  });

  it('PostgreSQL dropping the connection of a chunk in flight (a restart) fails that chunk transiently, and nothing escapes as an uncaught error', async () => {
    // pg emits 'error' on a client whose connection ends; a client checked out of the pool had no
    // listener, so a PostgreSQL restart that caught a chunk transaction crashed the whole worker
    // (fault suite, test/faults/postgres-restart.test.ts). Both moments are covered: the backend
    // dies while a statement runs, and while the transaction holds the connection between statements.
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const run = new JobRun<{ at: number }>(t.database, await claim(), timeouts);
      await run.commit(rowsChunk(3, { at: 0 }));
      const before = await state();
      const terminate = (pid: number) => t.database.pool.query('select pg_terminate_backend($1)', [pid]);
      const pidOf = async (client: import('pg').PoolClient) => (await client.query('select pg_backend_pid() as pid')).rows[0].pid as number;

      const midStatement = await run
        .commit({
          ...rowsChunk(3, { at: 3 }),
          write: async (w) => {
            const pid = await pidOf(w.client);
            await rowsChunk(3, { at: 3 }).write(w);
            await Promise.all([w.client.query('select pg_sleep(10)'), new Promise((r) => setTimeout(r, 100)).then(() => terminate(pid))]);
          },
        })
        .catch((e: unknown) => e);
      const betweenStatements = await run
        .commit({
          ...rowsChunk(3, { at: 3 }),
          write: async (w) => {
            const pid = await pidOf(w.client);
            await rowsChunk(3, { at: 3 }).write(w);
            await terminate(pid);
            await new Promise((r) => setTimeout(r, 300)); // the connection ends while nothing runs on it
            await w.client.query('select 1');
          },
        })
        .catch((e: unknown) => e);
      // A Drizzle transaction (the claim) checks its connection out the same way.
      const inTransaction = await t.database.db
        .transaction(async (tx) => {
          const pid = (await tx.execute<{ pid: number }>(sql`select pg_backend_pid() as pid`)).rows[0]!.pid;
          await terminate(pid);
          await new Promise((r) => setTimeout(r, 300));
          await tx.execute(sql`select 1`);
        })
        .catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 200));

      expect(uncaught.map(String)).toEqual([]);
      for (const err of [midStatement, betweenStatements, inTransaction]) {
        expect(err).toBeInstanceOf(Error);
        expect(isTransientDbError(err), String(err)).toBe(true);
      }
      expect(await state()).toEqual(before);
      // The pool dropped the dead connections: the same run goes on with the chunk it lost.
      await run.commit(rowsChunk(3, { at: 3 }));
      expect((await state()).rows).toBe(before.rows + 3);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });

  it('runs jobs that share a lock key one at a time, in the order they were accepted', async () => {
    const key = `test:${uuidv7()}`;
    const mk = () =>
      insertJob(t.database.db, { id: uuidv7(), teamId, type: 'cms.bulk_write', queue: 'q', payload: {}, lockKeys: [key] });
    const first = await mk();
    const second = await mk();
    expect((await claimJob(t.database.db, second.id, 'w')).kind).toBe('blocked');
    expect((await claimJob(t.database.db, first.id, 'w')).kind).toBe('claimed');
    expect((await claimJob(t.database.db, second.id, 'w')).kind).toBe('blocked');
    await t.database.db.execute(sql`update jobs set status = 'completed' where id = ${first.id}`);
    expect((await claimJob(t.database.db, second.id, 'w')).kind).toBe('claimed');
  });
});

async function countsByN(): Promise<Map<number, number>> {
  const r = await t.database.pool.query<{ n: number; c: number }>(
    `select (draft_data->>'n')::int as n, count(*)::int as c from cms_rows where table_id = $1 group by 1`,
    [table.id],
  );
  return new Map(r.rows.map((x) => [x.n, x.c]));
}

describe('chunks in parts', () => {
  /** A chunk of `parts` parts of `n` rows each, from `cp`; part `slowFrom` on (0-based) sleeps `sleepMs` first. */
  const partedChunk = (cp: { at: number }, parts: number, n: number, slowFrom = parts, sleepMs = 0) => {
    const list = Array.from({ length: parts }, (_, k) => {
      const rows = rowsChunk(n, { at: cp.at + k * n });
      return {
        end: { checkpoint: rows.checkpoint, done: rows.done, total: 100, rows: (k + 1) * n },
        write: async (w: { client: import('pg').PoolClient }) => {
          if (k >= slowFrom) await w.client.query(`select pg_sleep(${sleepMs / 1000})`);
          await rows.write(w);
        },
      };
    });
    return { ...list[list.length - 1]!.end, parts: list };
  };

  it('writes every part when the chunk stays within its time budget', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 5_000 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer });
    const before = (await state()).rows;
    const end = await run.commit(partedChunk({ at: 0 }, 4, 10));
    expect(end.checkpoint).toEqual({ at: 40 });
    const s = await state();
    expect(s.rows - before).toBe(40);
    expect(s.job).toMatchObject({ chunk_seq: 1, checkpoint: { at: 40 }, progress_done: 40 });
  });

  it('ends a chunk after the part past which one more would overrun 75% of the budget, committing those parts with their checkpoint', async () => {
    // Budget 400 ms (cut at 300): after a quick first part a second would end far below; after a
    // second of 250 ms, a third would end at ~375 ms.
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 400 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer });
    const before = (await state()).rows;
    const end = await run.commit(partedChunk({ at: 0 }, 4, 10, 1, 250));
    expect(end).toMatchObject({ checkpoint: { at: 20 }, done: 20, rows: 20 });
    const s = await state();
    expect(s.rows - before).toBe(20);
    expect(s.job).toMatchObject({ chunk_seq: 1, checkpoint: { at: 20 }, progress_done: 20 });
    const timeline = await t.database.pool.query('select rows, duration_ms from job_chunks where job_id = $1', [job.id]);
    expect(timeline.rows[0].rows).toBe(20);
    expect(timeline.rows[0].duration_ms).toBeLessThan(500);
    // The sizer learnt the rate of what was committed: 20 rows in ~250 ms aims under 40.
    expect(sizer.size).toBeLessThan(40);
  });

  it('a chunk that can also be written whole is written in parts when the run splits, and whole when it does not', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 100 });
    const whole = (cp: { at: number }) => ({ ...partedChunk(cp, 4, 10, 0, 80), write: rowsChunk(40, cp).write });
    let split = true;
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer, split: () => split });
    const before = (await state()).rows;
    // Nothing measured yet: split, and cut after the first part (80 ms against a cut at 75).
    expect((await run.commit(whole({ at: 0 }))).checkpoint).toEqual({ at: 10 });
    expect((await state()).rows - before).toBe(10);
    split = false;
    expect((await run.commit(whole({ at: 10 }))).checkpoint).toEqual({ at: 50 });
    expect((await state()).rows - before).toBe(50);
  });

  it('a chunk expected to be quick is still written in parts, and cut short when a part stalls', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 1_000 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer });
    const before = (await state()).rows;
    // A quick chunk sets the rate: 40 rows in a few ms.
    await run.commit(rowsChunk(40, { at: 0 }));
    // Then 40 rows in parts of 400 ms: after the first, a second would end past half the budget.
    expect((await run.commit(partedChunk({ at: 40 }, 4, 10, 0, 400))).checkpoint).toEqual({ at: 50 });
    expect((await state()).rows - before).toBe(50);
  });

  it('a chunk with parts only, in a run that does not split, writes every part and is not cut', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 100 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer, split: () => false });
    const before = (await state()).rows;
    expect((await run.commit(partedChunk({ at: 0 }, 4, 10, 0, 40))).checkpoint).toEqual({ at: 40 });
    expect((await state()).rows - before).toBe(40);
  });

  it('a budget of 0 (fixed chunk sizes) never cuts a chunk', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 40, max: 40, targetMs: 0 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer });
    const end = await run.commit(partedChunk({ at: 0 }, 4, 10, 0, 30));
    expect(end.checkpoint).toEqual({ at: 40 });
    expect(sizer.size).toBe(40);
  });

  it('runChunks commits the parts left of a cut chunk as the next chunks, and plans on from the chunk\'s own end', async () => {
    const sizer = new ChunkSizer({ initial: 40, min: 10, max: 100, targetMs: 1_000 });
    const run = new JobRun<{ at: number }>(t.database, await claim(), { ...timeouts, sizer });
    const countsBefore = await countsByN();
    const asked: number[] = [];
    // Budget 1 s (cut at 750 ms). The first chunk's parts 2–4 take 600 ms each: cut after part 2
    // (a third would end at ~900 ms), then after part 3 alone, then part 4 alone.
    const final = await runChunks<{ at: number }>(
      run,
      { at: 0 },
      async (cp) => {
        asked.push(cp.at);
        if (cp.at >= 100) return null;
        const n = Math.min(10, (100 - cp.at) / 4);
        return cp.at === 0 ? partedChunk(cp, 4, n, 1, 600) : partedChunk(cp, 4, n);
      },
      { ahead: () => true },
    );
    expect(final).toEqual({ at: 100 });
    expect(asked).toEqual([0, 40, 80, 100]);
    const timeline = await t.database.pool.query<{ rows: number }>('select rows from job_chunks where job_id = $1 order by seq', [job.id]);
    expect(timeline.rows.map((r) => r.rows)).toEqual([20, 10, 10, 40, 20]);
    expect((await state()).job).toMatchObject({ checkpoint: { at: 100 }, progress_done: 100 });
    // Every value 0..99 written exactly once.
    const after = await countsByN();
    for (let n = 0; n < 100; n++) expect((after.get(n) ?? 0) - (countsBefore.get(n) ?? 0), `n = ${n}`).toBe(1);
  });
});

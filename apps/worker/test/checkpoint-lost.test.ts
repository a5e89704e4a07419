import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { waitFor } from '../../../test/helpers';
import { openTeamWorld, type TeamWorld } from './support';

/**
 * A run whose last committed chunk PostgreSQL lost: a run alone in its process commits chunks
 * without waiting for their WAL flush, so a PostgreSQL crash can take back the last of them, each
 * whole with its checkpoint, while the run goes on from what it remembers. Emulated here by
 * putting the job's row, its rows and its timeline back as they were one chunk earlier, between
 * two chunks of a paced bulk write. Real worker runtime, Redis and PostgreSQL.
 */
const OPS = 1_000;
const CHUNK = 100;
let world: TeamWorld;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  world = await openTeamWorld('lossy');
});
afterAll(async () => {
  await worker?.close();
  await world?.close();
});

describe('chunks lost by PostgreSQL', () => {
  it('the run hands the job back, using no attempt, and a new run redoes the lost chunk: the job ends exact', async () => {
    const { t } = world;
    // 300 ms before each chunk (the API's pressure signal, set by hand): time to step in between.
    worker = await startWorker(
      loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_QUEUES: 'cms-bulk-write', WORKER_CHUNK_SIZE: String(CHUNK), WORKER_PRESSURE_PAUSE_MS: '300' }),
      pino({ level: 'silent' }),
    );
    await world.redis.set(`${t.queuePrefix}:db-pressure`, 'test', 'PX', 60_000);
    const id = await world.bulkWrite(OPS);

    // The row after each chunk, as the worker committed it.
    const seen = new Map<number, { checkpoint: unknown; done: number; lease: number }>();
    const row = async () =>
      (await t.database.pool.query('select chunk_seq, checkpoint, progress_done::int as done, lease, attempts from jobs where id = $1', [id])).rows[0];
    await waitFor(
      async () => {
        const r = await row();
        seen.set(r.chunk_seq, { checkpoint: r.checkpoint, done: r.done, lease: r.lease });
        return r.chunk_seq >= 4 && seen.has(r.chunk_seq - 1) ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 10, what: 'four chunks' },
    );

    // What a crash before chunk k's WAL flush leaves: the row, the rows and the timeline of chunk k - 1.
    const client = await t.database.pool.connect();
    let lost: number;
    try {
      await client.query('begin');
      const now = (await client.query('select chunk_seq, progress_done::int as done from jobs where id = $1 for update', [id])).rows[0];
      lost = now.chunk_seq;
      const before = seen.get(lost - 1)!;
      expect(before).toBeDefined();
      const tableId = (await client.query(`select payload->>'tableId' as t from jobs where id = $1`, [id])).rows[0].t;
      await client.query(`delete from cms_rows where table_id = $1 and (draft_data->>'n')::int >= $2 and (draft_data->>'n')::int < $3`, [tableId, before.done, now.done]);
      await client.query('delete from job_chunks where job_id = $1 and seq = $2', [id, lost]);
      await client.query('update jobs set chunk_seq = $2, checkpoint = $3::jsonb, progress_done = $4 where id = $1', [id, lost - 1, JSON.stringify(before.checkpoint), before.done]);
      await client.query('commit');
    } finally {
      client.release();
    }
    const leaseAtLoss = seen.get(lost - 1)!.lease;

    await world.redis.del(`${t.queuePrefix}:db-pressure`);
    await waitFor(async () => ((await t.database.pool.query('select status from jobs where id = $1', [id])).rows[0].status === 'completed' ? true : undefined), {
      timeoutMs: 30_000,
      what: 'the bulk write to complete',
    });
    const end = await row();
    const tableId = (await t.database.pool.query(`select payload->>'tableId' as t from jobs where id = $1`, [id])).rows[0].t;
    const rows = (
      await t.database.pool.query(`select count(*)::int as n, count(distinct (draft_data->>'n'))::int as distinct_n from cms_rows where table_id = $1`, [tableId])
    ).rows[0];
    expect(rows).toEqual({ n: OPS, distinct_n: OPS });
    // A new run (a later lease) redid the lost chunk; no attempt was used.
    expect(end.lease).toBeGreaterThan(leaseAtLoss);
    expect(end.attempts).toBe(0);
    const seqs = (await t.database.pool.query('select seq from job_chunks where job_id = $1 order by seq', [id])).rows.map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
  }, 60_000);
});

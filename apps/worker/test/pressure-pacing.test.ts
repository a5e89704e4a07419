import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { signalPressure } from '@platform/jobs';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { waitFor } from '../../../test/helpers';
import { openTeamWorld, type TeamWorld } from './support';

/**
 * Issue 4: workers slow down when the API signals database pressure, and keep slowing down for a
 * while after the signal is gone (WORKER_PRESSURE_MEMORY_MS). Real worker runtime, Redis and
 * PostgreSQL; the API's signal is the Redis key it sets, set here by hand.
 */
const PAUSE_MS = 300;
const CHUNKS = 6;
let world: TeamWorld;
let worker: WorkerRuntime | undefined;

beforeAll(async () => {
  world = await openTeamWorld('paced');
});
afterEach(async () => {
  await worker?.close();
  worker = undefined;
});
afterAll(async () => {
  await world?.close();
});

const pressureKey = () => `${world.t.queuePrefix}:db-pressure`;

/** Runs a bulk write of CHUNKS chunks of 100 and returns the gaps between its chunks' starts (ms). */
async function chunkGaps(): Promise<number[]> {
  const { t } = world;
  const id = await world.bulkWrite(CHUNKS * 100);
  await waitFor(async () => (await t.database.pool.query('select status from jobs where id = $1', [id])).rows[0].status === 'completed', {
    timeoutMs: 30_000,
    what: 'the bulk write to complete',
  });
  // committed_at is the chunk transaction's now(): when it began.
  const chunks = await t.database.pool.query<{ at: Date }>('select committed_at as at from job_chunks where job_id = $1 and rows > 0 order by seq', [id]);
  expect(chunks.rows).toHaveLength(CHUNKS);
  return chunks.rows.slice(1).map((c, i) => c.at.getTime() - chunks.rows[i]!.at.getTime());
}

const run = (memoryMs: number) =>
  startWorker(
    loadConfig({ ...world.t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '100', WORKER_PRESSURE_PAUSE_MS: String(PAUSE_MS), WORKER_PRESSURE_MEMORY_MS: String(memoryMs) }),
    pino({ level: 'warn' }),
  );

describe('pacing under database pressure', () => {
  it('pauses before every chunk while the API signals pressure, and keeps pausing after the signal is gone', async () => {
    worker = await run(60_000);
    await world.redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    const signalled = await chunkGaps();
    await world.redis.del(pressureKey());
    const remembered = await chunkGaps();
    console.log(`pacing: gaps between chunk starts while signalled ${signalled.join(', ')} ms; just after ${remembered.join(', ')} ms`);
    // Each chunk waits the full pause while the key is up…
    expect(Math.min(...signalled)).toBeGreaterThanOrEqual(PAUSE_MS - 20);
    // …and most of it within seconds of the key going (the pause fades over 60 s here).
    expect(Math.min(...remembered)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);

  it('without memory (WORKER_PRESSURE_MEMORY_MS=0) a worker stops pausing once the signal is gone', async () => {
    worker = await run(0);
    await world.redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    const signalled = await chunkGaps();
    await world.redis.del(pressureKey());
    await new Promise((r) => setTimeout(r, 200)); // past the worker's 100 ms read interval
    const after = await chunkGaps();
    console.log(`pacing without memory: gaps while signalled ${signalled.join(', ')} ms; after ${after.join(', ')} ms`);
    expect(Math.min(...signalled)).toBeGreaterThanOrEqual(PAUSE_MS - 20);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    expect(sum(after)).toBeLessThan(sum(signalled) / 2);
  }, 60_000);

  it('an idle worker also remembers pressure that came and went between its runs', async () => {
    worker = await run(60_000);
    await world.redis.set(pressureKey(), 'p99:40ms', 'PX', 60_000);
    await new Promise((r) => setTimeout(r, 1_000)); // no job runs meanwhile
    await world.redis.del(pressureKey());
    const after = await chunkGaps();
    console.log(`pacing after pressure seen while idle: gaps ${after.join(', ')} ms`);
    expect(Math.min(...after)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);

  it('a worker started after the API signalled pressure (the signal already gone) starts paced', async () => {
    await signalPressure(world.redis, world.t.queuePrefix, 'p99:40ms', 200);
    await waitFor(async () => (await world.redis.exists(pressureKey())) === 0, { timeoutMs: 5_000, intervalMs: 20, what: 'the signal to expire' });
    worker = await run(60_000);
    const first = await chunkGaps();
    console.log(`pacing of a worker started after the signal: gaps ${first.join(', ')} ms`);
    expect(Math.min(...first)).toBeGreaterThanOrEqual(PAUSE_MS * 0.7);
  }, 60_000);
});

import http from 'node:http';
import os from 'node:os';
import { DelayedError, Worker, type Job } from 'bullmq';
import type { Logger as PinoLogger } from 'pino';
import { createDatabase, failDispatch, isTransientDbError, type Database } from '@platform/db';
import {
  assertNoEviction,
  ChunkSizer,
  ConnectionBudget,
  createRedis,
  envelopeSchema,
  FsBlobStore,
  jobDefinition,
  Producer,
  readPressure,
  sweepBlobs,
  waitReady,
} from '@platform/jobs';
import { forgiveBlamelessStall, processors, runBullJob, type RunnerDeps } from '@platform/jobs/processors';
import type { WorkerConfig } from './config';
import { PressureGauge } from './pressure-gauge';
import { FairSlots, NoSlotsError, type SlotRequest } from './fair-slots';

export interface WorkerRuntime {
  database: Database;
  /** Listening port of /healthz and /metrics (useful when configured as 0). */
  port: number;
  close(): Promise<void>;
}

function bullDispatch(job: Job): { rowId: string; dispatch: number } | undefined {
  const m = /^(.+)\.(\d+)$/.exec(job.id ?? '');
  return m ? { rowId: m[1]!, dispatch: Number(m[2]) } : undefined;
}

/**
 * Wires one worker process: a pool sized to its concurrency, one BullMQ Worker per queue it
 * drains, a process-wide fair slot scheduler (so the pool is never asked for more than it has),
 * and a health server.
 */
export async function startWorker(config: WorkerConfig, log: PinoLogger): Promise<WorkerRuntime> {
  const database = createDatabase({
    url: config.databaseUrl,
    max: config.poolMax,
    applicationName: 'worker',
    idleInTransactionTimeoutMs: config.idleInTxTimeoutMs,
    // Above statement_timeout, so the server cancels a slow statement first; a half-open
    // connection is noticed (and dropped) here.
    queryTimeoutMs: config.statementTimeoutMs + 5_000,
  });
  // Exports read here when a replica is configured: one connection per slot at most, no writes.
  const replicaDatabase = config.replicaDatabaseUrl
    ? createDatabase({
        url: config.replicaDatabaseUrl,
        max: config.concurrency,
        applicationName: 'worker-replica',
        queryTimeoutMs: config.statementTimeoutMs + 5_000,
      })
    : undefined;
  const redis = createRedis(config.redisUrl, 'worker');
  await waitReady(redis, 30_000);
  await assertNoEviction(redis);
  const producer = new Producer(redis, config.queuePrefix, config.fair ? database.db : undefined);
  const blobs = new FsBlobStore(config.blobDir);
  const owner = `${os.hostname()}:${process.pid}`;
  let shuttingDown = false;

  // The connections all workers together may hold (ARCHITECTURE invariant 5): this process leases
  // a share through Redis and sizes its pool and its job slots to it. Crashed workers stop
  // renewing; their share comes back when the lease expires.
  const budget =
    config.dbBudget > 0
      ? new ConnectionBudget({ redis, prefix: config.queuePrefix, budget: config.dbBudget, holder: owner, ttlMs: config.dbBudgetTtlMs })
      : undefined;
  const want = config.concurrency + 1;
  let granted = budget ? await budget.acquire(want) : want;
  while (budget && granted < 1) {
    log.warn({ budget: config.dbBudget }, 'no database connections left in the workers budget; waiting for a share');
    await new Promise((r) => setTimeout(r, 1_000));
    granted = await budget.acquire(want);
  }
  /** Job slots for a share: one connection is kept for the claim and bookkeeping beside the runs. */
  const slotsFor = (connections: number) => (connections <= 0 ? 0 : Math.max(1, Math.min(config.concurrency, connections - 1)));
  database.pool.options.max = granted;
  const slots = new FairSlots({ size: slotsFor(granted), fifo: !config.fair });
  /**
   * Deliveries each BullMQ worker may hold for `n` slots: twice as many with fair scheduling, so
   * jobs of other teams wait here, where the scheduler sees them, instead of in Redis.
   */
  const fetchFor = (n: number) => (config.fair ? n * 2 : n);
  /**
   * Fits the pool and the slots to the share the lease now grants. A larger share starts waiting
   * jobs; a smaller one (this process was paused past its lease and others took its share) takes
   * slots back as runs end and closes connections beyond it as they come back idle. With no share
   * at all the process stops fetching jobs and hands back the deliveries waiting for a slot, so
   * other workers run them, until a share frees.
   */
  const fitToShare = (g: number) => {
    if (g === granted) return;
    const was = granted;
    granted = g;
    // One connection stays possible for bookkeeping (an outage check, a hand-back); it is closed
    // again at the next renewal once idle.
    database.pool.options.max = Math.max(1, g);
    slots.resize(slotsFor(g));
    // Hold no more deliveries than the slots can take.
    for (const w of workers) w.concurrency = Math.max(1, fetchFor(slots.size));
    if (g === 0) for (const w of workers) void w.pause(true).catch(() => {});
    else if (was === 0) for (const w of workers) void w.resume();
    if (g > was) log.info({ connections: g, slots: slots.size }, 'larger share of the connection budget');
    else log.warn({ connections: g, was, slots: slots.size }, 'smaller share of the connection budget (the lease lapsed); shrinking the pool');
  };
  let trimming = false;
  const trimPool = async () => {
    if (trimming) return;
    trimming = true;
    try {
      const pool = database.pool;
      // Only while idle clients exist, so connect() hands one over at once instead of queueing.
      while (pool.totalCount > granted && pool.idleCount > 0) {
        const client = await pool.connect();
        client.release(true); // released with an error: the pool closes it
      }
    } finally {
      trimming = false;
    }
  };
  const renewBudget = budget
    ? setInterval(() => {
        budget.acquire(want).then(
          async (g) => {
            fitToShare(g);
            await trimPool();
          },
          (err) => log.warn({ err: String(err) }, 'could not renew the connection budget lease'),
        ).catch((err) => log.warn({ err: String(err) }, 'could not fit the pool to the connection budget'));
      }, Math.max(500, Math.floor(config.dbBudgetTtlMs / 3)))
    : undefined;
  renewBudget?.unref();

  // Database pressure (the API's reads slow, or its pool waiting) makes workers slow down first.
  // Read every 100 ms at most: each slow read before a run notices counts against the studio.
  let pressureWas = false;
  const pressure = new PressureGauge(async () => {
    const r = await readPressure(redis, config.queuePrefix);
    if (r.up !== pressureWas) {
      if (r.up) log.info({ signal: r.value }, 'the API signals database pressure: chunks are halved and paced');
      else log.info({ memoryMs: config.pressureMemoryMs }, 'database pressure signal gone: pacing fades out');
      pressureWas = r.up;
    }
    return r;
  }, {
    pollMs: 100,
    memoryMs: config.pressureMemoryMs,
  });
  // Watched while idle too: the memory must know of pressure that came and went between runs.
  const watchPressure = setInterval(() => void pressure.level(), 250);
  watchPressure.unref();
  const sizers = new Map<string, ChunkSizer>();
  const sizerFor = (jobId: string) => {
    let s = sizers.get(jobId);
    if (!s) {
      // A budget of 0 keeps chunks at WORKER_CHUNK_SIZE, never cut short (tests that count chunks use it).
      const fixed = config.chunkBudgetMs === 0;
      s = new ChunkSizer({
        initial: config.chunkSize,
        min: fixed ? config.chunkSize : Math.min(config.chunkMin, config.chunkSize),
        max: fixed ? config.chunkSize : Math.max(config.chunkMax, config.chunkSize),
        targetMs: config.chunkBudgetMs,
      });
      sizers.set(jobId, s);
      if (sizers.size > 1_000) sizers.delete(sizers.keys().next().value!);
    }
    return s;
  };
  const counters = { completed: 0, failed: 0, handedBack: 0, fenced: 0 };

  const deps: RunnerDeps = {
    database,
    replicaDatabase,
    blobs,
    producer,
    log,
    owner,
    chunkSize: config.chunkSize,
    exportPageRows: config.exportPageRows,
    exportChunkMs: config.exportChunkMs,
    exportReaders: config.exportReaders,
    blockedRetryMs: config.blockedRetryMs,
    dbOutageGraceMs: config.dbOutageGraceMs,
    processors,
    chunk: {
      lockTimeoutMs: config.lockTimeoutMs,
      statementTimeoutMs: config.statementTimeoutMs,
      fault: config.fault,
      shouldStop: () => (shuttingDown ? 'shutdown' : null),
    },
    teamMaxRunning: config.teamMaxRunning,
  };
  if (config.maxRunTimeMs) {
    const limit = config.maxRunTimeMs;
    deps.maxRunTimeMs = Object.fromEntries(Object.keys(processors).map((t) => [t, limit]));
  }

  /** Which team a delivery is for and how urgent it is, read from its envelope. */
  const slotRequest = (job: Job): SlotRequest => {
    const env = envelopeSchema.safeParse(job.data);
    if (!env.success) return { teamId: 'unknown', workClass: 'bulk' };
    const def = jobDefinition(env.data.type);
    const payload = def?.payload.safeParse(env.data.payload);
    return {
      teamId: env.data.teamId,
      workClass: def && payload?.success ? def.workClass(payload.data) : 'bulk',
    };
  };

  const workers = config.queues.map((queue) => {
    const worker = new Worker(
      queue,
      async (job, token) => {
        // Before waiting for a slot: a delivery stuck behind a crashing job is a bystander each time.
        const forgiven = await forgiveBlamelessStall(job, deps);
        if (forgiven) {
          counters.handedBack++;
          return forgiven;
        }
        const req = slotRequest(job);
        let release: () => void;
        try {
          release = await slots.acquire(req);
        } catch (err) {
          if (!(err instanceof NoSlotsError)) throw err;
          // No share of the connection budget here: the delivery goes back for another worker,
          // using no attempt.
          counters.handedBack++;
          await job.moveToDelayed(Date.now() + 1_000, token);
          throw new DelayedError();
        }
        const heldSince = Date.now();
        const sizer = sizerFor(envelopeSchema.safeParse(job.data).data?.jobId ?? String(job.id));
        try {
          const out = await runBullJob(job, token, deps, {
            sizer,
            // Fair sharing: after its time slice a run yields at the next chunk boundary when
            // another team (or this team's interactive work) waits for a slot here.
            shouldStop: () =>
              config.fair && Date.now() - heldSince >= config.timeSliceMs && slots.shouldYield(req) ? 'yield' : null,
            // Under pressure: halve the chunk and pause before it. Pressure seen recently: a
            // shorter pause, shorter the longer ago it was (see PressureGauge).
            pace: async () => {
              const level = await pressure.level();
              if (level >= 1) sizer.backOff();
              if (level > 0) await new Promise((r) => setTimeout(r, Math.round(config.pressurePauseMs * level)));
            },
            alone: () => slots.inUse <= 1,
            split: () => config.chunkParts === 'always' || slots.inUse > 1,
          });
          if (out.outcome === 'completed') counters.completed++;
          if (out.outcome === 'handed_back') counters.handedBack++;
          if (out.outcome === 'fenced') counters.fenced++;
          return out;
        } finally {
          release();
        }
      },
      {
        connection: redis,
        prefix: config.queuePrefix,
        concurrency: Math.max(1, fetchFor(slots.size)),
        lockDuration: config.lockDurationMs,
        stalledInterval: config.stalledIntervalMs,
        maxStalledCount: config.maxStalledCount,
      },
    );
    worker.on('error', (err) => log.error({ err: err.message, queue }, 'worker error'));
    worker.on('failed', (job, err) => {
      counters.failed++;
      if (!job) return;
      const d = bullDispatch(job);
      const stalled = /stalled/i.test(err.message);
      const final = stalled || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      // BullMQ gave up on the delivery: end the row too, unless the processor already did (then
      // the status guard makes this a no-op) or a newer dispatch took over. This covers deliveries
      // that died before our processor could record anything: stalled past the limit, or
      // Postgres unreachable at the claim on every attempt.
      if (d && final) {
        const code = stalled ? 'stalled' : isTransientDbError(err) ? 'dependency_unavailable' : 'internal';
        failDispatch(database.db, d.rowId, d.dispatch, { code, message: err.message }).catch((e) =>
          log.error({ err: String(e), jobId: d.rowId }, 'could not record the failed delivery'),
        );
      }
    });
    // A delivery that stalls past maxStalledCount is failed by BullMQ's stall check itself, with
    // no 'failed' event on the worker: look at the stalled job, and end its row if it was failed.
    worker.on('stalled', (bullId) => {
      void (async () => {
        const job = await producer.queue(queue).getJob(bullId);
        if (!job || (await job.getState()) !== 'failed') return;
        const d = bullDispatch(job);
        if (!d) return;
        const message = job.failedReason || 'the job stalled more often than allowed';
        if (await failDispatch(database.db, d.rowId, d.dispatch, { code: 'stalled', message })) {
          log.warn({ jobId: d.rowId }, 'job failed after stalling too often');
        }
      })().catch((e) => log.error({ err: String(e) }, 'could not inspect a stalled job'));
    });
    return worker;
  });

  // The blob lifecycle: one worker at a time (a Redis lock) deletes expired uploads and exports.
  const sweepKey = `${config.queuePrefix}:blob-sweep`;
  const sweep = async () => {
    if (shuttingDown) return;
    const mine = await redis.set(sweepKey, owner, 'PX', Math.max(60_000, config.blobSweepMs), 'NX');
    if (mine !== 'OK') return;
    const out = await sweepBlobs(database.db, blobs, {
      inputRetentionMs: config.inputRetentionMs,
      exportRetentionMs: config.exportRetentionMs,
    });
    if (out.deleted.length) log.info({ scanned: out.scanned, deleted: out.deleted.length }, 'expired blobs deleted');
  };
  const sweeper =
    config.blobSweepMs > 0
      ? setInterval(() => void sweep().catch((e) => log.warn({ err: String(e) }, 'blob sweep failed')), config.blobSweepMs)
      : undefined;
  sweeper?.unref();

  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(shuttingDown ? 503 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: shuttingDown ? 'stopping' : 'ok' }));
    } else if (req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(
        [
          '# TYPE worker_jobs_total counter',
          ...Object.entries(counters).map(([k, v]) => `worker_jobs_total{outcome="${k}"} ${v}`),
          '# TYPE worker_slots_in_use gauge',
          `worker_slots_in_use ${slots.inUse}`,
          '',
        ].join('\n'),
      );
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not_found', message: 'no such route' } }));
    }
  });
  await new Promise<void>((resolve) => server.listen(config.port, resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  log.info({ queues: config.queues, concurrency: config.concurrency, poolMax: config.poolMax, port }, 'worker started');

  let closing: Promise<void> | undefined;
  return {
    database,
    port,
    close() {
      closing ??= (async () => {
        // Stop taking jobs; runs in hand stop at their next chunk boundary and hand back.
        shuttingDown = true;
        const graceful = Promise.all(workers.map((w) => w.close()));
        const timedOut = await Promise.race([
          graceful.then(() => false),
          new Promise<boolean>((r) => setTimeout(() => r(true), config.shutdownTimeoutMs).unref()),
        ]);
        if (timedOut) {
          log.warn({ timeoutMs: config.shutdownTimeoutMs }, 'workers did not stop in time; forcing');
          await Promise.all(workers.map((w) => w.close(true).catch(() => {})));
        }
        if (renewBudget) clearInterval(renewBudget);
        clearInterval(watchPressure);
        if (sweeper) clearInterval(sweeper);
        await producer.close().catch(() => {});
        server.close();
        await database.close();
        // The share goes back only once this process's connections are closed.
        await budget?.release().catch(() => {});
        redis.disconnect();
        await replicaDatabase?.close();
        log.info({}, 'worker stopped');
      })();
      return closing;
    },
  };
}

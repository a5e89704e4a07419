import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { TeamClient } from './api';

/**
 * One benchmark: sets up what it needs through the running platform, measures it and its
 * baseline in the same run, and returns rows for the table. Add a module to `bench/benches/index.ts`
 * and `npm run bench -- --only <name>` runs it.
 */
export interface BenchModule {
  /** Kebab-case, unique: what `--only` takes. */
  name: string;
  /** One line for `--list` and the JSON file. */
  description: string;
  run(ctx: BenchContext): Promise<BenchRow[]>;
}

export interface Measure {
  value: number;
  /** `ms`, `rows/s`, `jobs/s`, `chunks`, … Rows compare platform and baseline only in one unit. */
  unit: string;
}

export interface BenchRow {
  /** What the row measures, e.g. `enqueue-latency p50`. */
  bench: string;
  platform: Measure | null;
  baseline: Measure | null;
  /** Which way is good, so a reader (or a CI check on latest.json) reads the ratio right. */
  better?: 'lower' | 'higher';
  note?: string;
}

/** A row as printed and saved: the ratio is platform ÷ baseline, filled in by the harness. */
export interface ResultRow extends BenchRow {
  module: string;
  ratio: number | null;
  failed?: boolean;
}

/** What every module gets: the running platform, direct handles for baselines, and helpers. */
export interface BenchContext {
  apiUrl: string;
  adminToken: string;
  databaseUrl: string;
  redisUrl: string;
  /** QUEUE_PREFIX of the platform's apps. */
  queuePrefix: string;
  /** Effective worker settings (the apps' defaults unless the environment overrides them). */
  worker: { concurrency: number; chunkSize: number };
  /** The bench process's own small pool, for reading the job history and inline baselines. */
  pg: pg.Pool;
  /** The bench process's own Redis connection (the platform's Redis). */
  redis: Redis;
  /** Aborted on Ctrl+C: long waits should pass it on. */
  signal: AbortSignal;
  log(line: string): void;
  /** A new team (through the admin API) with a client bound to its token. */
  newTeam(name: string): Promise<TeamClient>;
  /** A BullMQ Queue handle on one of the platform's queues (to pause/resume or count). */
  platformQueue(name: string): Queue;
  /**
   * A BullMQ Queue under a fresh prefix that no platform worker drains, on the same Redis:
   * for raw baselines. Obliterated when the run ends.
   */
  rawQueue(name: string): Queue;
  /** The Redis URL and prefix a raw baseline worker should use for `rawQueue` queues. */
  rawPrefix: string;
  /** Resolves when no job of the history is queued or active (the platform is quiet). */
  waitIdle(opts?: { timeoutMs?: number }): Promise<void>;
  /**
   * Polls the job history until every named job has ended; resolves with the moment (performance.now())
   * the last one was seen ended, and the count per final status.
   */
  waitJobsEnded(ids: string[], opts?: { timeoutMs?: number; intervalMs?: number }): Promise<{ at: number; statuses: Record<string, number> }>;
}

import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_QUEUE_PREFIX } from '@platform/jobs';

const int = (def: number) => z.coerce.number().int().positive().default(def);

const schema = z
  .object({
    DATABASE_URL: z.string().min(1),
    REDIS_URL: z.string().min(1),
    ADMIN_TOKEN: z.string().min(16, 'ADMIN_TOKEN must be at least 16 characters'),
    API_PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    API_HOST: z.string().default('0.0.0.0'),
    QUEUE_PREFIX: z.string().min(1).default(DEFAULT_QUEUE_PREFIX),
    BLOB_DIR: z.string().min(1).optional(),
    API_DB_POOL_MAX: int(10),
    /** JSON bodies of the small routes. */
    API_BODY_LIMIT_BYTES: int(1024 * 1024),
    /** Bulk writes take up to 100,000 operations. */
    API_BULK_BODY_LIMIT_BYTES: int(64 * 1024 * 1024),
    /** Import files are streamed to the blob store, never buffered; counted after decompression. */
    API_IMPORT_MAX_BYTES: int(1024 * 1024 * 1024),
    /** Default per-team caps (teams.max_queued_jobs overrides the first); 0 turns one off. */
    API_TEAM_MAX_QUEUED: z.coerce.number().int().min(0).default(500),
    API_TEAM_ENQUEUE_PER_MINUTE: z.coerce.number().int().min(0).default(600),
    /**
     * Database pressure by latency: when the 99th percentile of the API's reads over the last
     * second is above this (ms), workers are told to slow down (for 5 s). 0 turns it off (pool waits still count).
     * Below the reads' target (idle p99 + 20 ms, ~25 ms here), so workers slow down before the
     * reads reach it: at 25 the import's read p99 met its limit in 9 of 11 bench runs, at 15 it
     * kept 5–10 ms under it (and the import ran at 5,700–6,900 rows/s instead of 9,000–16,700).
     */
    API_PRESSURE_LATENCY_MS: z.coerce.number().int().min(0).default(15),
    /** `false` enqueues in plain FIFO order (no team interleaving): the benchmarks' baseline. */
    FAIR_SCHEDULING: z.enum(['true', 'false']).default('true'),
    LOG_LEVEL: z.string().default('info'),
  })
  .transform((c) => ({
    databaseUrl: c.DATABASE_URL,
    redisUrl: c.REDIS_URL,
    adminToken: c.ADMIN_TOKEN,
    port: c.API_PORT,
    host: c.API_HOST,
    queuePrefix: c.QUEUE_PREFIX,
    blobDir: path.resolve(c.BLOB_DIR ?? path.join(process.env.INIT_CWD ?? process.cwd(), '.data/blobs')),
    poolMax: c.API_DB_POOL_MAX,
    bodyLimit: c.API_BODY_LIMIT_BYTES,
    bulkBodyLimit: c.API_BULK_BODY_LIMIT_BYTES,
    importMaxBytes: c.API_IMPORT_MAX_BYTES,
    logLevel: c.LOG_LEVEL,
    teamMaxQueued: c.API_TEAM_MAX_QUEUED,
    teamEnqueuePerMinute: c.API_TEAM_ENQUEUE_PER_MINUTE,
    fair: c.FAIR_SCHEDULING === 'true',
    pressureLatencyMs: c.API_PRESSURE_LATENCY_MS,
  }));

export type ApiConfig = z.output<typeof schema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): ApiConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || 'config'}: ${i.message}`);
    throw new Error(`invalid API configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

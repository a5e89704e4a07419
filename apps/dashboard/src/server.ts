import { randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createDatabase } from '@platform/db';
import { assertNoEviction, createRedis, waitReady } from '@platform/jobs';
import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app';
import { ConfigError, loadConfig, type DashboardConfig } from './config';

export interface RunningDashboard {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/**
 * Connects, checks Redis, builds and listens. Refuses to start on a Redis whose
 * maxmemory-policy is not `noeviction` (ARCHITECTURE "Defaults that matter").
 */
export async function startDashboard(config: DashboardConfig): Promise<RunningDashboard> {
  // The dashboard only reads and issues single commands: fail fast (a page answers 503) rather
  // than hang while Redis is away.
  const redis = createRedis(config.REDIS_URL, 'producer');
  const database = createDatabase({
    url: config.DATABASE_URL,
    max: config.DASHBOARD_DB_POOL_MAX,
    applicationName: 'dashboard',
  });
  const closeConnections = async () => {
    await database.close();
    redis.disconnect();
  };
  let app: FastifyInstance | undefined;
  try {
    await waitReady(redis);
    await assertNoEviction(redis);
    await database.pool.query('select 1');
    const operator =
      config.DASHBOARD_USER && config.DASHBOARD_PASSWORD
        ? { username: config.DASHBOARD_USER, password: config.DASHBOARD_PASSWORD }
        : undefined;
    app = await buildApp({
      db: database.db,
      redis,
      queuePrefix: config.QUEUE_PREFIX,
      operator,
      sessionSecret: config.SESSION_SECRET ?? randomBytes(32).toString('base64url'),
      cookieSecure: config.DASHBOARD_COOKIE_SECURE === 'auto' ? 'auto' : config.DASHBOARD_COOKIE_SECURE === 'true',
      trustProxy: config.DASHBOARD_TRUST_PROXY,
      logger: { level: config.LOG_LEVEL },
      loginThrottle: { maxFailures: config.DASHBOARD_LOGIN_MAX_FAILURES, windowS: config.DASHBOARD_LOGIN_WINDOW_S },
      redriveMax: config.DASHBOARD_REDRIVE_MAX,
      fair: config.FAIR_SCHEDULING === 'true',
      maintenance: {
        sampleIntervalMs: config.DASHBOARD_SAMPLE_INTERVAL_MS,
        purgeIntervalMs: config.DASHBOARD_PURGE_INTERVAL_MS,
        historyRetentionDays: config.HISTORY_RETENTION_DAYS,
        auditRetentionDays: config.AUDIT_RETENTION_DAYS,
        samplesRawHours: config.QUEUE_SAMPLES_RAW_HOURS,
        samplesRetentionDays: config.QUEUE_SAMPLES_RETENTION_DAYS,
      },
    });
    if (!config.SESSION_SECRET) app.log.warn('SESSION_SECRET is not set: sessions are signed with a random key and end when the dashboard restarts');
    if (!operator) app.log.warn('DASHBOARD_USER is not set: only staff accounts from the database can sign in (npm run staff -- add NAME --role operator)');
    const url = await app.listen({ port: config.DASHBOARD_PORT, host: config.DASHBOARD_HOST });
    const started = app;
    return {
      app: started,
      url,
      async close() {
        // The app first (stops listening, finishes requests, closes its queues), pools last.
        try {
          await started.close();
        } finally {
          await closeConnections();
        }
      },
    };
  } catch (err) {
    await app?.close().catch(() => {});
    await closeConnections();
    throw err;
  }
}

async function main(): Promise<void> {
  let config: DashboardConfig;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : err);
    process.exit(2);
  }
  let running: RunningDashboard;
  try {
    running = await startDashboard(config);
  } catch (err) {
    console.error(`dashboard failed to start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
  running.app.log.info({ url: running.url }, 'dashboard listening');
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) running.app.log.error({ err }, 'closing after an uncaught error');
    else running.app.log.info({ signal }, 'closing');
    await running.close();
  });
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) void main();

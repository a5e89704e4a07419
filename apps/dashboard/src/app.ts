import fastifyFormbody from '@fastify/formbody';
import type { Db } from '@platform/db';
import { createQueue, Producer, QUEUE_NAMES } from '@platform/jobs';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Redis } from 'ioredis';
import { StaffActions } from './actions';
import { installAuth } from './auth';
import { registerBullBoard } from './bull-board';
import { installErrorHandling } from './errors';
import { LoginThrottle } from './login-throttle';
import { DEFAULT_MAINTENANCE, Maintenance, type MaintenanceOptions } from './maintenance';
import { actionRoutes } from './routes/actions';
import { assetRoutes } from './routes/assets';
import { auditRoutes } from './routes/audit';
import { chartRoutes } from './routes/charts';
import { homeRoutes } from './routes/home';
import { jobRoutes } from './routes/jobs';
import { loginRoutes } from './routes/login';
import { teamRoutes } from './routes/teams';

export interface AppDeps {
  db: Db;
  /** Owned by the caller, which closes it after the app (pools close last). */
  redis: Redis;
  queuePrefix: string;
  /** DASHBOARD_USER / DASHBOARD_PASSWORD: an operator account outside the database. */
  operator?: { username: string; password: string };
  sessionSecret: string;
  cookieSecure: boolean | 'auto';
  trustProxy?: boolean;
  logger?: FastifyServerOptions['logger'];
  /** Failed sign-ins allowed per username and per address within the window (default 5 in 15 min). */
  loginThrottle?: { maxFailures: number; windowS: number };
  /** At most this many jobs per redrive (default 1,000). */
  redriveMax?: number;
  /** FAIR_SCHEDULING: retried and redriven jobs get their team's fair priority (default true). */
  fair?: boolean;
  /**
   * The sampler and the retention pass. Their loops start only when this is given (the server
   * gives it; tests call `app.maintenance.sampleOnce()` / `purgeOnce()` themselves).
   */
  maintenance?: Partial<MaintenanceOptions>;
}

declare module 'fastify' {
  interface FastifyInstance {
    maintenance: Maintenance;
  }
}

/**
 * Builds the dashboard without listening: the server starts it, tests use `inject()`.
 * Order matters: the error handler and the auth hook come before any route, so every route,
 * bull-board's included, is behind them.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger ?? false,
    trustProxy: deps.trustProxy ?? false,
    bodyLimit: 1024 * 1024,
  });
  installErrorHandling(app);
  await app.register(fastifyFormbody, { bodyLimit: 16 * 1024 });
  const throttle = new LoginThrottle(deps.redis, { prefix: deps.queuePrefix, maxFailures: 5, windowS: 900, ...deps.loginThrottle });
  const auth = await installAuth(app, {
    db: deps.db,
    operator: deps.operator,
    secret: deps.sessionSecret,
    cookieSecure: deps.cookieSecure,
    throttle,
  });

  // The app owns its Queue objects (they share the caller's connection, which they leave open).
  const queues = QUEUE_NAMES.map((name) => {
    const q = createQueue(name, deps.redis, deps.queuePrefix);
    // Without a listener BullMQ prints connection errors to stderr; requests answer 503 meanwhile.
    q.on('error', (err) => app.log.warn({ err, queue: name }, 'queue connection error'));
    return q;
  });
  // With the database the producer ranks each requeued job in its team's line, as the API does.
  const producer = new Producer(deps.redis, deps.queuePrefix, deps.fair === false ? undefined : deps.db);
  for (const name of QUEUE_NAMES) {
    producer.queue(name).on('error', (err) => app.log.warn({ err, queue: name }, 'queue connection error'));
  }
  const actions = new StaffActions(deps.db, producer, deps.redriveMax ?? 1_000);
  const maintenanceOptions = { ...DEFAULT_MAINTENANCE, ...deps.maintenance };
  const maintenance = new Maintenance(deps.db, queues, app.log, maintenanceOptions);
  app.decorate('maintenance', maintenance);
  if (deps.maintenance) app.addHook('onReady', async () => maintenance.start());
  app.addHook('onClose', async () => {
    await maintenance.stop();
    await producer.close();
    await Promise.all(queues.map((q) => q.close()));
  });

  app.get('/healthz', { config: { public: true } }, async () => ({ status: 'ok' }));
  await app.register(loginRoutes, { auth });
  await app.register(assetRoutes);
  await app.register(homeRoutes, { db: deps.db, queues });
  await app.register(jobRoutes, { db: deps.db, actions });
  await app.register(actionRoutes, { db: deps.db, actions });
  await app.register(teamRoutes, { db: deps.db });
  await app.register(chartRoutes, {
    db: deps.db,
    queues: queues.map((q) => q.name),
    sampleIntervalMs: deps.maintenance ? maintenanceOptions.sampleIntervalMs : 0,
  });
  await app.register(auditRoutes, { db: deps.db });
  await registerBullBoard(app, queues);
  return app;
}

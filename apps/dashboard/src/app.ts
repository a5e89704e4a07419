import fastifyFormbody from '@fastify/formbody';
import type { Db } from '@platform/db';
import { createQueue, QUEUE_NAMES } from '@platform/jobs';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Redis } from 'ioredis';
import { installAuth } from './auth';
import { registerBullBoard } from './bull-board';
import { installErrorHandling } from './errors';
import { homeRoutes } from './routes/home';
import { loginRoutes } from './routes/login';

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
  const auth = await installAuth(app, {
    db: deps.db,
    operator: deps.operator,
    secret: deps.sessionSecret,
    cookieSecure: deps.cookieSecure,
  });

  // The app owns its Queue objects (they share the caller's connection, which they leave open).
  const queues = QUEUE_NAMES.map((name) => {
    const q = createQueue(name, deps.redis, deps.queuePrefix);
    // Without a listener BullMQ prints connection errors to stderr; requests answer 503 meanwhile.
    q.on('error', (err) => app.log.warn({ err, queue: name }, 'queue connection error'));
    return q;
  });
  app.addHook('onClose', async () => {
    await Promise.all(queues.map((q) => q.close()));
  });

  app.get('/healthz', { config: { public: true } }, async () => ({ status: 'ok' }));
  await app.register(loginRoutes, { auth });
  await app.register(homeRoutes, { db: deps.db, queues });
  await registerBullBoard(app, queues);
  return app;
}

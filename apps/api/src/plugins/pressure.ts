import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../deps';

/**
 * Tells the workers when the studio's interactive path is short of database connections: while
 * requests wait for the API's pool, a short-lived Redis key is kept set, and workers slow their
 * chunks down (smaller chunks, a pause between them) before the studio's traffic slows.
 */
export function publishDbPressure(app: FastifyInstance, deps: ApiDeps, everyMs = 200): void {
  const key = `${deps.config.queuePrefix}:db-pressure`;
  const timer = setInterval(() => {
    if (deps.database.pool.waitingCount > 0 && deps.redis.status === 'ready') {
      deps.redis.set(key, String(deps.database.pool.waitingCount), 'PX', 2_000).catch(() => {});
    }
  }, everyMs);
  timer.unref();
  app.addHook('onClose', async () => clearInterval(timer));
}

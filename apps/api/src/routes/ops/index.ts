import { sql } from 'drizzle-orm';
import type { FastifyPluginAsync } from 'fastify';
import type { Registry } from 'prom-client';
import type { ApiDeps } from '../../deps';
import { AppError } from '../../errors';

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`timed out after ${ms} ms`)), ms).unref())]);
}

export const opsRoutes: FastifyPluginAsync<ApiDeps & { metrics: Registry }> = async (app, deps) => {
  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { hide: true } }, async () => {
    const checks = await Promise.allSettled([
      withTimeout(deps.database.db.execute(sql`select 1`), 1_000),
      withTimeout(deps.redis.ping(), 1_000),
    ]);
    const down = [checks[0].status === 'rejected' ? 'PostgreSQL' : null, checks[1].status === 'rejected' ? 'Redis' : null].filter(Boolean);
    if (down.length) throw new AppError('dependency_unavailable', `${down.join(' and ')} not answering`);
    return { status: 'ready' };
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) =>
    reply.header('content-type', deps.metrics.contentType).send(await deps.metrics.metrics()),
  );
};

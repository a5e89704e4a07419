import type { FastifyInstance } from 'fastify';
import client from 'prom-client';
import type { ApiDeps } from '../deps';

/**
 * The API's Prometheus registry. The request counter's hook is added to the root instance, so it
 * sees every route: added inside the ops plugin (encapsulated) it only counted /healthz, /readyz
 * and /metrics themselves.
 */
export function registerMetrics(app: FastifyInstance, deps: ApiDeps): client.Registry {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const requests = new client.Counter({
    name: 'api_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  new client.Gauge({
    name: 'api_db_pool_waiting',
    help: 'Requests waiting for a database connection',
    registers: [registry],
    collect() {
      this.set(deps.database.pool.waitingCount);
    },
  });
  app.addHook('onResponse', async (req, reply) => {
    // Unknown routes share one label, so a scan of random URLs cannot grow the series without bound.
    requests.inc({ method: req.method, route: req.routeOptions.url ?? 'unknown', status: reply.statusCode });
  });
  return registry;
}

import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { jsonDeeperThan, MAX_JSON_DEPTH, QUEUE_NAMES } from '@platform/jobs';
import type { ApiDeps } from './deps';
import { AppError, registerErrorHandling } from './errors';
import { registerGzipBodies } from './plugins/gzip';
import { registerLingeringClose } from './plugins/lingering-close';
import { publishDbPressure } from './plugins/pressure';
import { registerMetrics } from './plugins/metrics';
import { adminRoutes } from './routes/admin/index';
import { cmsTableRoutes } from './routes/cms-tables/index';
import { importRoutes } from './routes/imports/index';
import { exportRoutes } from './routes/exports/index';
import { jobRoutes } from './routes/jobs/index';
import { opsRoutes } from './routes/ops/index';
import { projectRoutes } from './routes/projects/index';
import { publishRoutes } from './routes/publishes/index';

export interface BuildOptions {
  logger?: boolean | { level: string };
  /** Close the connections in `deps` when the app closes (server.ts does; tests may share them). */
  ownsDeps?: boolean;
}

/** Builds the API without listening (tests use `inject`). Plugins in order: external, app, routes. */
export async function buildApp(deps: ApiDeps, opts: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: deps.config.bodyLimit,
    trustProxy: true,
    // Query strings stay flat: `?a[b]=1` is not an object here.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
    // Errors raised before routing, in the one error shape too: an id of 10,000 characters got
    // Fastify's own 414 body, echoing the whole path (fault suite, test/faults/hostile-input.test.ts).
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      const e =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new AppError('not_found', 'no such resource (an id in the path is too long)')
          : new AppError('validation_failed', 'the URL is not valid');
      void reply.status(e.status).send({ error: { code: e.code, message: e.message } });
    },
  }).withTypeProvider<ZodTypeProvider>();
  watchRedis(app, deps);
  publishDbPressure(app, deps);
  registerLingeringClose(app);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Fastify parses text/plain by default; no route of the contract takes it, so it answers 415
  // instead of reaching a JSON route as a string (a 400 that hides the real mistake).
  app.removeContentTypeParser('text/plain');
  // Many clients send `Content-Type: application/json` on every POST; an empty body then means "no
  // body": a route that takes none (cancel, retry, publishes) answers as usual instead of 400, and a
  // route that needs one still answers 400 from its schema. Non-empty bodies get Fastify's parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  // Bytes, decoded strictly: decoded as a string, invalid UTF-8 became U+FFFD and a project was
  // created with a mangled name (fault suite, test/faults/hostile-input.test.ts). Past
  // MAX_JSON_DEPTH levels a body is refused here, once for every route.
  const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    if (body.length === 0) return done(null, undefined);
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      return done(new AppError('validation_failed', 'the body is not valid UTF-8'), undefined);
    }
    parseJson(req, text, (err, parsed) => {
      if (err) return done(err, undefined);
      if (jsonDeeperThan(parsed, MAX_JSON_DEPTH)) {
        return done(new AppError('validation_failed', `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`), undefined);
      }
      done(null, parsed);
    });
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Heavy jobs platform API',
        version: '1',
        description: 'Accepts heavy CMS and publishing work and runs it off the request path. See shared/API.md.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  registerErrorHandling(app);
  registerGzipBodies(app);
  const metrics = registerMetrics(app, deps);

  await app.register(opsRoutes, { ...deps, metrics });
  await app.register(adminRoutes, deps);
  await app.register(projectRoutes, deps);
  await app.register(publishRoutes, deps);
  await app.register(cmsTableRoutes, deps);
  await app.register(importRoutes, deps);
  await app.register(exportRoutes, deps);
  await app.register(jobRoutes, deps);

  if (opts.ownsDeps) {
    app.addHook('onClose', async () => {
      await deps.producer.close().catch(() => {});
      deps.redis.disconnect();
      await deps.database.close();
    });
  }
  return app;
}

/**
 * BullMQ initialises a queue's connection once, when the Queue is made (it reads the Redis
 * version); if that happens during an outage the promise stays rejected and the Queue never works
 * again, even after Redis is back. The producer makes its queues lazily, so the first job of a type
 * accepted during an outage would break that type until a restart. Opening every queue as soon as
 * Redis answers means none is ever first opened in an outage.
 * Redis errors are logged here (at most one line every 10 s), instead of ioredis and BullMQ
 * printing every reconnection failure to stderr.
 */
function watchRedis(app: FastifyInstance, deps: ApiDeps): void {
  let lastLog = 0;
  const onError = (err: unknown) => {
    if (Date.now() - lastLog < 10_000) return;
    lastLog = Date.now();
    app.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'Redis error');
  };
  let opened = false;
  const openQueues = () => {
    if (opened) return;
    opened = true;
    for (const name of QUEUE_NAMES) deps.producer.queue(name).on('error', onError);
  };
  deps.redis.on('error', onError);
  if (deps.redis.status === 'ready') openQueues();
  else deps.redis.once('ready', openQueues);
  app.addHook('onClose', async () => {
    deps.redis.off('ready', openQueues);
  });
}

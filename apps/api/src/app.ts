import Fastify, { type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { ApiDeps } from './deps';
import { registerErrorHandling } from './errors';
import { registerGzipBodies } from './plugins/gzip';
import { adminRoutes } from './routes/admin/index';
import { cmsTableRoutes } from './routes/cms-tables/index';
import { jobRoutes } from './routes/jobs/index';
import { opsRoutes } from './routes/ops/index';
import { projectRoutes } from './routes/projects/index';

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
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

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

  await app.register(opsRoutes, deps);
  await app.register(adminRoutes, deps);
  await app.register(projectRoutes, deps);
  await app.register(cmsTableRoutes, deps);
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

import closeWithGrace from 'close-with-grace';
import { createDatabase } from '@platform/db';
import { assertNoEviction, createRedis, FsBlobStore, Producer } from '@platform/jobs';
import { buildApp } from './app';
import { loadConfig } from './config';

async function main() {
  const config = loadConfig();
  const database = createDatabase({ url: config.databaseUrl, max: config.poolMax, applicationName: 'api' });
  const redis = createRedis(config.redisUrl, 'producer');
  await new Promise<void>((resolve, reject) => {
    redis.once('ready', resolve);
    setTimeout(() => reject(new Error(`Redis at ${config.redisUrl} did not answer within 10 s`)), 10_000).unref();
  });
  // Evicted queue keys are lost jobs: refuse to start on any other policy.
  await assertNoEviction(redis);
  const producer = new Producer(redis, config.queuePrefix, config.fair ? database.db : undefined);
  const app = await buildApp(
    { config, database, redis, producer, blobs: new FsBlobStore(config.blobDir) },
    { logger: { level: config.logLevel }, ownsDeps: true },
  );
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'fatal error, closing');
    else app.log.info({ signal }, 'closing');
    await app.close();
  });
  await app.listen({ port: config.port, host: config.host });
}

main().catch((err) => {
  console.error('API failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});

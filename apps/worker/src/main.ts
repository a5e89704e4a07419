import closeWithGrace from 'close-with-grace';
import pino from 'pino';
import { loadConfig } from './config';
import { startWorker } from './create-worker';

const config = loadConfig();
const log = pino({ level: config.logLevel, base: { app: 'worker', pid: process.pid } });

startWorker(config, log).then(
  (runtime) => {
    // SIGTERM: stop taking jobs, finish or hand back the chunk in hand, exit within the grace period.
    closeWithGrace({ delay: config.shutdownTimeoutMs + 5_000 }, async ({ signal, err }) => {
      if (err) log.error({ err: String(err) }, 'fatal error, shutting down');
      else log.info({ signal }, 'shutting down');
      await runtime.close();
    });
  },
  (err) => {
    log.fatal({ err: err instanceof Error ? err.message : String(err) }, 'worker failed to start');
    process.exit(1);
  },
);

import { Redis } from 'ioredis';

export type RedisRole = 'worker' | 'producer';

/**
 * A Lua fragment for scripts that need the time: sets `now` to Redis's own clock in milliseconds
 * (TIME), so that processes on different machines agree whatever their clocks say.
 */
export const LUA_NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/**
 * Workers wait out a Redis outage (`maxRetriesPerRequest: null`, BullMQ's requirement for blocking
 * connections); the API's producer fails fast (`enableOfflineQueue: false`) so an outage is an
 * immediate 503, not a hung request.
 */
export function createRedis(url: string, role: RedisRole): Redis {
  if (role === 'worker') {
    return new Redis(url, {
      maxRetriesPerRequest: null,
      retryStrategy: (times) => Math.min(200 * times, 2_000),
    });
  }
  return new Redis(url, {
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    retryStrategy: (times) => Math.min(100 * times, 1_000),
  });
}

export class EvictionPolicyError extends Error {
  override name = 'EvictionPolicyError';
}

/**
 * A process refuses to start unless Redis runs with `maxmemory-policy noeviction`: under any other
 * policy Redis may evict queue keys under memory pressure, and evicted keys are lost jobs.
 * Reads INFO rather than CONFIG GET, which managed Redis services often forbid.
 */
export async function assertNoEviction(redis: Redis): Promise<void> {
  const info = await redis.info('memory');
  const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1];
  if (policy !== 'noeviction') {
    throw new EvictionPolicyError(
      `Redis maxmemory-policy is "${policy ?? 'unknown'}"; it must be "noeviction" (evicted queue keys are lost jobs)`,
    );
  }
}

/** Resolves once the client is ready, or rejects after `timeoutMs`. */
export async function waitReady(redis: Redis, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis not ready after ${timeoutMs} ms`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(t);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}

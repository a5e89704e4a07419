import type { Redis } from 'ioredis';
import { LUA_NOW_MS } from './connection';

/**
 * The database-pressure signal between the API and the workers, in Redis. `<prefix>:db-pressure`
 * is set while the API's reads are slow or its pool waits (a short expiry); `<prefix>:db-pressure:last`
 * keeps when that last happened, by Redis's clock, so that every worker (one started since, one
 * that was idle) knows how long ago the studio last suffered.
 */
const keys = (prefix: string): [string, string] => [`${prefix}:db-pressure`, `${prefix}:db-pressure:last`];

/** How long the time of the last pressure is kept. */
const LAST_KEPT_MS = 60 * 60_000;

const SIGNAL = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
${LUA_NOW_MS}
redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
return 1
`;

const READ = `
local v = redis.call('GET', KEYS[1])
local last = redis.call('GET', KEYS[2])
${LUA_NOW_MS}
if last then return {v or '', now - tonumber(last)} end
return {v or '', -1}
`;

/** Sets the pressure signal (`value` says why) for `holdMs`, and records when. */
export async function signalPressure(redis: Redis, prefix: string, value: string, holdMs: number): Promise<void> {
  await redis.eval(SIGNAL, 2, ...keys(prefix), value, String(holdMs), String(LAST_KEPT_MS));
}

/** Whether the signal is up now, and how long ago it was last set (undefined: never, or over an hour ago). */
export async function readPressure(redis: Redis, prefix: string): Promise<{ up: boolean; value: string | null; sinceMs: number | undefined }> {
  const [v, since] = (await redis.eval(READ, 2, ...keys(prefix))) as [string, number];
  return { up: v !== '', value: v === '' ? null : v, sinceMs: since >= 0 ? since : undefined };
}

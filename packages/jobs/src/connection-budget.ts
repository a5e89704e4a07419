import type { Redis } from 'ioredis';
import { LUA_NOW_MS } from './connection';

/**
 * The database connections all workers together may hold, shared through Redis so it holds
 * however many replicas run. Each worker process leases a share (a count) under a TTL and renews
 * it; a crashed worker stops renewing and its share comes back by itself when the lease expires.
 * The clock is Redis's own (TIME), so workers' clocks do not matter.
 */
const ACQUIRE = `
local holders, expiry = KEYS[1], KEYS[2]
local holder, want, budget, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
${LUA_NOW_MS}
local dead = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
for _, d in ipairs(dead) do
  redis.call('HDEL', holders, d)
  redis.call('ZREM', expiry, d)
end
local total = 0
local vals = redis.call('HVALS', holders)
for _, v in ipairs(vals) do total = total + tonumber(v) end
local mine = tonumber(redis.call('HGET', holders, holder) or '0')
local grant = math.min(want, budget - (total - mine))
if grant < mine then grant = mine end
if grant <= 0 then
  redis.call('HDEL', holders, holder)
  redis.call('ZREM', expiry, holder)
  return 0
end
redis.call('HSET', holders, holder, grant)
redis.call('ZADD', expiry, now + ttl, holder)
return grant
`;

export interface ConnectionBudgetOptions {
  redis: Redis;
  /** Key namespace, e.g. the queue prefix. */
  prefix: string;
  /** Connections all workers together may hold. */
  budget: number;
  holder: string;
  ttlMs: number;
}

export class ConnectionBudget {
  private readonly keys: [string, string];

  constructor(private readonly opts: ConnectionBudgetOptions) {
    this.keys = [`${opts.prefix}:db-budget:holders`, `${opts.prefix}:db-budget:expiry`];
  }

  /**
   * Leases up to `want` connections (renewing the lease already held) and returns how many this
   * holder has now. A holder never loses what it holds while it keeps renewing.
   */
  async acquire(want: number): Promise<number> {
    const granted = await this.opts.redis.eval(
      ACQUIRE,
      2,
      ...this.keys,
      this.opts.holder,
      String(want),
      String(this.opts.budget),
      String(this.opts.ttlMs),
    );
    return Number(granted);
  }

  async release(): Promise<void> {
    await this.opts.redis.multi().hdel(this.keys[0], this.opts.holder).zrem(this.keys[1], this.opts.holder).exec();
  }

  /** Every holder's share, for metrics and the benchmark. */
  async shares(): Promise<Record<string, number>> {
    const all = await this.opts.redis.hgetall(this.keys[0]);
    return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, Number(v)]));
  }
}

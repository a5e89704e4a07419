import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * Sign-in throttling: at most `maxFailures` failed attempts per username and per client address
 * in a window of `windowS` seconds (5 in 15 minutes by default); past that every attempt for that
 * username or from that address answers 429 with Retry-After, right or wrong, without checking
 * the password (so the answer tells a guesser nothing). The window starts at the first failure.
 *
 * Counters live in Redis, so several dashboard processes share them. While Redis does not answer
 * they live in this process's memory instead: staff can still sign in during a Redis incident,
 * and a guesser is still slowed down.
 */

export interface ThrottleOptions {
  maxFailures: number;
  windowS: number;
  /** Key prefix in Redis (the app's queue prefix keeps test runs apart). */
  prefix: string;
}

export class ThrottledError extends Error {
  override name = 'ThrottledError';
  constructor(readonly retryAfterS: number) {
    super(`too many failed sign-in attempts; try again in ${retryAfterS} s`);
  }
}

// INCR and start the window on the first failure, atomically.
const FAIL_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

export class LoginThrottle {
  private readonly memory = new Map<string, { count: number; resetAt: number }>();

  constructor(
    private readonly redis: Redis | undefined,
    private readonly opts: ThrottleOptions,
  ) {}

  private keys(username: string, ip: string): string[] {
    const user = createHash('sha256').update(username).digest('base64url').slice(0, 22);
    return [`${this.opts.prefix}:dashboard:login-failures:user:${user}`, `${this.opts.prefix}:dashboard:login-failures:ip:${ip}`];
  }

  /** Throws ThrottledError when the username or the address is over its limit. */
  async check(username: string, ip: string): Promise<void> {
    const keys = this.keys(username, ip);
    let states: Array<{ count: number; ttlMs: number }>;
    try {
      if (!this.redis) throw new Error('no redis');
      const pipe = this.redis.pipeline();
      for (const k of keys) pipe.get(k).pttl(k);
      const res = (await pipe.exec()) ?? [];
      states = keys.map((_, i) => {
        const [e1, count] = res[i * 2] ?? [];
        const [e2, ttl] = res[i * 2 + 1] ?? [];
        if (e1 || e2) throw e1 ?? e2;
        return { count: Number(count ?? 0), ttlMs: Number(ttl ?? -1) };
      });
    } catch {
      states = keys.map((k) => this.memoryState(k));
    }
    const over = states.filter((s) => s.count >= this.opts.maxFailures);
    if (over.length > 0) {
      const ttl = Math.max(...over.map((s) => (s.ttlMs > 0 ? s.ttlMs : this.opts.windowS * 1000)));
      throw new ThrottledError(Math.max(1, Math.ceil(ttl / 1000)));
    }
  }

  async failed(username: string, ip: string): Promise<void> {
    const keys = this.keys(username, ip);
    try {
      if (!this.redis) throw new Error('no redis');
      await Promise.all(keys.map((k) => this.redis!.eval(FAIL_SCRIPT, 1, k, String(this.opts.windowS * 1000))));
    } catch {
      for (const k of keys) this.memoryFail(k);
    }
  }

  /** A right password clears the username's count (not the address's: one known account must not reset it). */
  async succeeded(username: string, ip: string): Promise<void> {
    const [userKey] = this.keys(username, ip);
    this.memory.delete(userKey!);
    try {
      await this.redis?.del(userKey!);
    } catch {
      // Redis away: the count expires with its window.
    }
  }

  private memoryState(key: string): { count: number; ttlMs: number } {
    const e = this.memory.get(key);
    if (!e || e.resetAt <= Date.now()) return { count: 0, ttlMs: -1 };
    return { count: e.count, ttlMs: e.resetAt - Date.now() };
  }

  private memoryFail(key: string): void {
    const now = Date.now();
    const e = this.memory.get(key);
    if (!e || e.resetAt <= now) {
      // Bounded: an attacker cycling addresses cannot grow the map without limit.
      if (this.memory.size >= 10_000) {
        for (const [k, v] of this.memory) if (v.resetAt <= now) this.memory.delete(k);
        if (this.memory.size >= 10_000) this.memory.clear();
      }
      this.memory.set(key, { count: 1, resetAt: now + this.opts.windowS * 1000 });
    } else {
      e.count++;
    }
  }
}

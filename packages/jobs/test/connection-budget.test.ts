import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { Redis } from 'ioredis';
import { ConnectionBudget, createRedis } from '@platform/jobs';

let redis: Redis;
beforeAll(() => {
  redis = createRedis(inject('redisUrl'), 'worker');
});
afterAll(() => redis.disconnect());

const budget = (prefix: string, holder: string, ttlMs = 10_000) =>
  new ConnectionBudget({ redis, prefix, budget: 5, holder, ttlMs });

describe('connection budget', () => {
  it('never grants more than the budget across holders', async () => {
    const prefix = `b${randomBytes(4).toString('hex')}`;
    const a = budget(prefix, 'a');
    const b = budget(prefix, 'b');
    const c = budget(prefix, 'c');
    expect(await a.acquire(4)).toBe(4);
    expect(await b.acquire(4)).toBe(1);
    expect(await c.acquire(4)).toBe(0);
    expect(await a.acquire(4)).toBe(4); // renewing keeps the share
    const shares = await a.shares();
    expect(Object.values(shares).reduce((x, y) => x + y, 0)).toBe(5);
  });

  it('gives a crashed holder’s share back once its lease expires', async () => {
    const prefix = `b${randomBytes(4).toString('hex')}`;
    const crashed = budget(prefix, 'crashed', 300);
    const alive = budget(prefix, 'alive');
    expect(await crashed.acquire(5)).toBe(5);
    expect(await alive.acquire(3)).toBe(0);
    await new Promise((r) => setTimeout(r, 400));
    expect(await alive.acquire(3)).toBe(3);
  });

  it('frees a share on release', async () => {
    const prefix = `b${randomBytes(4).toString('hex')}`;
    const a = budget(prefix, 'a');
    const b = budget(prefix, 'b');
    expect(await a.acquire(5)).toBe(5);
    await a.release();
    expect(await b.acquire(5)).toBe(5);
  });
});

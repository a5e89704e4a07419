import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { basic, OPERATOR, startTestDashboard, type TestDashboard } from './helpers';

/** Sign-in throttling: 5 failures per username or per address in 15 minutes, then 429 with Retry-After. */

let t: TestDashboard;
beforeAll(async () => {
  // The default limits; the proxy is trusted so each test can come from its own address.
  t = await startTestDashboard({ trustProxy: true });
});
afterAll(async () => {
  await t?.close();
});

/** A script's sign-in (JSON), or a browser's form post with `asPage`. */
function form(username: string, password: string, ip: string, asPage = false) {
  return t.app.inject({
    method: 'POST',
    url: '/login',
    headers: asPage
      ? { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': ip, accept: 'text/html' }
      : { 'content-type': 'application/json', 'x-forwarded-for': ip },
    payload: asPage ? new URLSearchParams({ username, password }).toString() : JSON.stringify({ username, password }),
  });
}

describe('sign-in throttling', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y' });
    expect([c.DASHBOARD_LOGIN_MAX_FAILURES, c.DASHBOARD_LOGIN_WINDOW_S]).toEqual([5, 900]);
  });

  it('refuses a username after 5 failures, even with the right password and from elsewhere, and says when to retry', async () => {
    for (let i = 0; i < 5; i++) expect((await form(OPERATOR.username, `wrong-${i}`, `10.0.0.${i + 1}`)).statusCode).toBe(401);
    const blocked = await form(OPERATOR.username, OPERATOR.password, '10.0.1.1');
    expect(blocked.statusCode).toBe(429);
    expect(blocked.json()).toMatchObject({ error: { code: 'rate_limited' } });
    const retryAfter = Number(blocked.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(800);
    expect(retryAfter).toBeLessThanOrEqual(900);
    expect(blocked.headers['set-cookie']).toBeUndefined();
    // A browser gets the form again, saying why.
    const page = await form(OPERATOR.username, OPERATOR.password, '10.0.1.2', true);
    expect(page.statusCode).toBe(429);
    expect(page.body).toContain('Too many failed attempts');
    // HTTP Basic is the same door.
    const viaBasic = await t.app.inject({ url: '/api/jobs', headers: { authorization: basic(OPERATOR.username, OPERATOR.password), 'x-forwarded-for': '10.0.1.3' } });
    expect(viaBasic.statusCode).toBe(429);
    expect(viaBasic.headers['retry-after']).toBeDefined();
    // The counters are in Redis, where every dashboard process sees them.
    const keys = await t.redis.keys(`${t.prefix}:dashboard:login-failures:*`);
    expect(keys.length).toBeGreaterThan(0);
  });

  it('refuses an address after 5 failures, whatever names it tries; other addresses still sign in', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await t.app.inject({ url: '/api/jobs', headers: { authorization: basic(`guess${i}`, 'nope-nope-nope'), 'x-forwarded-for': '10.9.9.9' } });
      expect(res.statusCode).toBe(401);
    }
    expect((await form('someone-else', 'whatever-password', '10.9.9.9')).statusCode).toBe(429);
    await t.redis.del(...(await t.redis.keys(`${t.prefix}:dashboard:login-failures:user:*`)));
    const elsewhere = await form(OPERATOR.username, OPERATOR.password, '10.8.8.8');
    expect(elsewhere.statusCode).toBe(303);
  });
});

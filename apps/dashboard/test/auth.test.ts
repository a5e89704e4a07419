import { createDatabase, createTeam, insertJob, uuidv7 } from '@platform/db';
import { createRedis, importJob, QUEUE_NAMES } from '@platform/jobs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../scripts/lib/services';
import { buildApp } from '../src/app';
import { SESSION_COOKIE } from '../src/auth';
import { basic, cookiePair, OPERATOR, startTestDashboard, type TestDashboard } from './helpers';

let t: TestDashboard;
beforeAll(async () => {
  // These tests send a dozen wrong passwords on purpose; throttling has its own tests (throttle.test.ts).
  t = await startTestDashboard({ loginThrottle: { maxFailures: 100, windowS: 900 } });
});
afterAll(async () => {
  await t?.close();
});

const PAGE = { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' };

function expectUnauthorized(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }) {
  expect(res.statusCode).toBe(401);
  expect(res.headers['www-authenticate']).toMatch(/^Basic realm="dashboard"/);
  expect(res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
}

async function signIn(username: string, password: string, extra: Record<string, string> = {}) {
  return t.app.inject({
    method: 'POST',
    url: '/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams({ username, password, ...extra }).toString(),
  });
}

describe('without credentials', () => {
  it('redirects a browser asking for a page to the sign-in form', async () => {
    for (const url of ['/', '/queues', '/queues/queue/cms-import']) {
      const res = await t.app.inject({ url, headers: PAGE });
      expect(res.statusCode, url).toBe(302);
      expect(res.headers.location).toBe(`/login?next=${encodeURIComponent(url)}`);
    }
  });

  it('answers 401 in the error shape to anything else, bull-board API and assets included', async () => {
    for (const url of ['/', '/queues/api/queues', '/queues/api/redis/stats', '/queues/static/favicon-32x32.png', '/no-such-page']) {
      const res = await t.app.inject({ url, headers: { accept: 'application/json' } });
      expectUnauthorized(res);
    }
    // A mutating bull-board call without credentials does nothing either.
    const pause = await t.app.inject({ method: 'PUT', url: `/queues/api/queues/${QUEUE_NAMES[0]}/pause` });
    expectUnauthorized(pause);
    expect(await t.queue(QUEUE_NAMES[0]!).isPaused()).toBe(false);
  });

  it('serves /healthz and the sign-in page, which loads nothing from elsewhere', async () => {
    expect((await t.app.inject({ url: '/healthz' })).statusCode).toBe(200);
    const login = await t.app.inject({ url: '/login', headers: PAGE });
    expect(login.statusCode).toBe(200);
    expect(login.headers['content-type']).toMatch(/^text\/html/);
    expect(login.body).toContain('<form');
    expect(login.body).toContain('name="password"');
    expect(login.body).not.toMatch(/(src|href|action)="(https?:)?\/\//i);
    expect(login.headers['content-security-policy']).toContain("default-src 'none'");
  });
});

describe('HTTP Basic', () => {
  it('lets the env operator list our queues through bull-board', async () => {
    const res = await t.app.inject({ url: '/queues/api/queues', headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
    expect(res.statusCode).toBe(200);
    const names = (res.json() as { queues: { name: string; readOnlyMode: boolean }[] }).queues.map((q) => q.name);
    expect(names.sort()).toEqual([...QUEUE_NAMES].sort());
    expect(names.length).toBeGreaterThan(0);
  });

  it('serves bull-board, its assets included, to a signed-in operator, with nothing loaded from elsewhere', async () => {
    const authorization = basic(OPERATOR.username, OPERATOR.password);
    const board = await t.app.inject({ url: '/queues', headers: { authorization, accept: 'text/html' } });
    expect(board.statusCode).toBe(200);
    expect(board.body).toContain('<base href="/queues/"');
    expect(board.body).not.toMatch(/<(link|script)[^>]+(href|src)="(https?:)?\/\//i);
    const script = /<script[^>]+src="(static\/js\/[^"]+)"/.exec(board.body)?.[1];
    expect(script).toBeDefined();
    expect((await t.app.inject({ url: `/queues/${script}`, headers: { authorization } })).statusCode).toBe(200);
    expect((await t.app.inject({ url: `/queues/${script}` })).statusCode).toBe(401);
  });

  it('refuses a wrong password, an unknown user and a malformed header', async () => {
    for (const authorization of [basic(OPERATOR.username, 'wrong'), basic('nobody', OPERATOR.password), 'Basic !!!', 'Bearer x']) {
      expectUnauthorized(await t.app.inject({ url: '/queues/api/queues', headers: { authorization } }));
    }
    // Wrong Basic credentials get 401 even from a browser: the redirect is only for "no credentials".
    const page = await t.app.inject({ url: '/', headers: { ...PAGE, authorization: basic(OPERATOR.username, 'wrong') } });
    expect(page.statusCode).toBe(401);
  });
});

describe('sign-in form and session cookie', () => {
  it('signs in, sets a hardened cookie, and the overview shows a job row (escaped)', async () => {
    const team = await createTeam(t.database.db, '<script>alert("team")</script>');
    const job = await insertJob(t.database.db, {
      id: uuidv7(),
      teamId: team.id,
      type: importJob.name,
      queue: importJob.queue,
      payload: {},
      progressDone: 120,
      progressTotal: 200,
    });

    const res = await signIn(OPERATOR.username, OPERATOR.password);
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe('/');
    const setCookie = String(res.headers['set-cookie']);
    expect(setCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=`));
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Lax/i);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).not.toMatch(/Secure/); // plain http under `auto`
    const cookie = cookiePair(res.headers['set-cookie'], SESSION_COOKIE)!;

    const home = await t.app.inject({ url: '/', headers: { ...PAGE, cookie } });
    expect(home.statusCode).toBe(200);
    expect(home.headers['content-type']).toMatch(/^text\/html/);
    expect(home.body).toContain(job.id);
    expect(home.body).toContain(importJob.name);
    expect(home.body).toContain('120 / 200');
    expect(home.body).toContain('&lt;script&gt;alert(&quot;team&quot;)&lt;/script&gt;');
    expect(home.body).not.toContain('<script>alert');
    for (const name of QUEUE_NAMES) expect(home.body).toContain(`>${name}</a>`);

    // The same cookie opens bull-board too.
    expect((await t.app.inject({ url: '/queues/api/queues', headers: { cookie } })).statusCode).toBe(200);
  });

  it('marks the cookie Secure behind https (trusted proxy)', async () => {
    const behindTls = await startTestDashboard({ trustProxy: true });
    try {
      const res = await behindTls.app.inject({
        method: 'POST',
        url: '/login',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https' },
        payload: new URLSearchParams(OPERATOR).toString(),
      });
      expect(res.statusCode).toBe(303);
      expect(String(res.headers['set-cookie'])).toMatch(/;\s*Secure/i);
    } finally {
      await behindTls.close();
    }
  });

  it('refuses a wrong password without a cookie', async () => {
    for (const [u, p] of [[OPERATOR.username, 'not-the-password'], ['nobody', 'whatever-password'], [OPERATOR.username, '']]) {
      const res = await signIn(u!, p!);
      expect(res.statusCode).toBe(401);
      expect(res.headers['set-cookie']).toBeUndefined();
      expect(res.body).toContain('Wrong username or password');
    }
  });

  it('refuses a tampered or forged cookie', async () => {
    const res = await signIn(OPERATOR.username, OPERATOR.password);
    const cookie = cookiePair(res.headers['set-cookie'], SESSION_COOKIE)!;
    const [name, value] = cookie.split('=') as [string, string];
    const decoded = decodeURIComponent(value);
    const dot = decoded.lastIndexOf('.');
    const payload = JSON.parse(Buffer.from(decoded.slice(0, dot), 'base64url').toString()) as { exp: number };
    const extended = Buffer.from(JSON.stringify({ ...payload, exp: payload.exp + 1e9 })).toString('base64url');
    for (const bad of [`${extended}${decoded.slice(dot)}`, decoded.slice(0, dot), `${decoded}x`]) {
      const r = await t.app.inject({ url: '/queues/api/queues', headers: { cookie: `${name}=${encodeURIComponent(bad)}` } });
      expectUnauthorized(r);
    }
  });

  it('only follows same-site `next` paths after sign-in', async () => {
    const ok = await signIn(OPERATOR.username, OPERATOR.password, { next: '/queues/queue/cms-import' });
    expect(ok.headers.location).toBe('/queues/queue/cms-import');
    for (const next of ['//evil.example/', 'https://evil.example/', '/\\evil.example']) {
      const res = await signIn(OPERATOR.username, OPERATOR.password, { next });
      expect(res.headers.location, next).toBe('/');
    }
  });

  it('signs out: the cookie is cleared', async () => {
    const res = await signIn(OPERATOR.username, OPERATOR.password);
    const cookie = cookiePair(res.headers['set-cookie'], SESSION_COOKIE)!;
    const out = await t.app.inject({
      method: 'POST',
      url: '/logout',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      payload: '',
    });
    expect(out.statusCode).toBe(303);
    expect(out.headers.location).toBe('/login');
    expect(cookiePair(out.headers['set-cookie'], SESSION_COOKIE)).toBe(`${SESSION_COOKIE}=`);
  });

  it('refuses mutating requests that a browser marks as cross-site', async () => {
    const auth = { authorization: basic(OPERATOR.username, OPERATOR.password) };
    const url = `/queues/api/queues/${QUEUE_NAMES[0]}/pause`;
    for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }]) {
      const res = await t.app.inject({ method: 'PUT', url, headers: { ...auth, ...headers } });
      expect(res.statusCode).toBe(403);
      expect(res.json()).toMatchObject({ error: { code: 'forbidden' } });
    }
    expect(await t.queue(QUEUE_NAMES[0]!).isPaused()).toBe(false);
  });
});

describe('when PostgreSQL or Redis is down', () => {
  it('answers 503 in the error shape, not a hang or a bare 500', async () => {
    const deadPg = createDatabase({ url: `postgres://postgres:postgres@127.0.0.1:${await freePort()}/x`, max: 1, applicationName: 't', connectionTimeoutMs: 1_000 });
    const deadRedis = createRedis(`redis://127.0.0.1:${await freePort()}`, 'producer');
    deadRedis.on('error', () => {});
    const app = await buildApp({ db: deadPg.db, redis: deadRedis, queuePrefix: 'dead', operator: OPERATOR, sessionSecret: 'x'.repeat(32), cookieSecure: 'auto' });
    try {
      // A database account cannot be checked without PostgreSQL...
      const staff = await app.inject({ url: '/queues/api/queues', headers: { authorization: basic('someone', 'some-password-1') } });
      expect(staff.statusCode).toBe(503);
      expect(staff.json()).toEqual({ error: { code: 'dependency_unavailable', message: expect.any(String) } });
      expect(staff.headers['retry-after']).toBeDefined();
      // ...and the overview cannot be drawn without Redis and PostgreSQL.
      const home = await app.inject({ url: '/', headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
      expect(home.statusCode).toBe(503);
      expect(home.json()).toMatchObject({ error: { code: 'dependency_unavailable' } });
    } finally {
      await app.close();
      deadRedis.disconnect();
      await deadPg.close();
    }
  });
});

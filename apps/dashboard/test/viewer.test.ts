import { QUEUE_NAMES } from '@platform/jobs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SESSION_COOKIE, XSRF_COOKIE } from '../src/auth';
import { runStaffCommand, type StaffIo } from '../src/staff-cli';
import { basic, cookiePair, startTestDashboard, type TestDashboard } from './helpers';

let t: TestDashboard;
const silent: StaffIo = { out: () => {}, err: () => {} };
const VIEWER = { username: 'vera', password: 'viewer-password-1' };
const OPERATOR = { username: 'olga', password: 'operator-password-1' };
const QUEUE = QUEUE_NAMES[0]!;

beforeAll(async () => {
  t = await startTestDashboard();
  expect(await runStaffCommand(t.database.db, { kind: 'add', role: 'viewer', ...VIEWER }, silent)).toBe(0);
  expect(await runStaffCommand(t.database.db, { kind: 'add', role: 'operator', ...OPERATOR }, silent)).toBe(0);
});
afterAll(async () => {
  await t?.close();
});

async function sessionOf(user: { username: string; password: string }): Promise<string> {
  const res = await t.app.inject({
    method: 'POST',
    url: '/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams(user).toString(),
  });
  expect(res.statusCode).toBe(303);
  return cookiePair(res.headers['set-cookie'], SESSION_COOKIE)!;
}

describe('a viewer from the staff table', () => {
  it('reads: the overview, bull-board pages and its API', async () => {
    const auth = { authorization: basic(VIEWER.username, VIEWER.password) };
    for (const url of ['/', '/queues', `/queues/queue/${QUEUE}`, '/queues/api/queues']) {
      const res = await t.app.inject({ url, headers: auth });
      expect(res.statusCode, url).toBe(200);
    }
    const cookie = await sessionOf(VIEWER);
    const home = await t.app.inject({ url: '/', headers: { cookie, accept: 'text/html' } });
    expect(home.statusCode).toBe(200);
    expect(home.body).toContain('vera (viewer)');
  });

  it('is refused any bull-board action with 403, and the queue stays running', async () => {
    const cookie = await sessionOf(VIEWER);
    const attempts = [
      { method: 'PUT' as const, url: `/queues/api/queues/${QUEUE}/pause`, headers: { authorization: basic(VIEWER.username, VIEWER.password) } },
      { method: 'PUT' as const, url: `/queues/api/queues/${QUEUE}/pause`, headers: { cookie } },
      { method: 'PUT' as const, url: '/queues/api/queues/pause', headers: { cookie } },
      {
        method: 'POST' as const,
        url: `/queues/api/queues/${QUEUE}/add`,
        headers: { cookie, 'content-type': 'application/json' },
        payload: { name: 'x', data: {} },
      },
    ];
    for (const a of attempts) {
      const res = await t.app.inject(a);
      expect(res.statusCode, `${a.method} ${a.url}`).toBe(403);
      expect(res.json()).toEqual({ error: { code: 'forbidden', message: expect.any(String) } });
    }
    const queue = t.queue(QUEUE);
    expect(await queue.isPaused()).toBe(false);
    expect(await queue.count()).toBe(0);
  });

  it('sees the board as read-only, while an operator sees it writable', async () => {
    const readOnly = async (authorization: string) =>
      ((await t.app.inject({ url: '/queues/api/queues', headers: { authorization } })).json() as { queues: { readOnlyMode: boolean }[] }).queues.map(
        (q) => q.readOnlyMode,
      );
    expect(await readOnly(basic(VIEWER.username, VIEWER.password))).toEqual(QUEUE_NAMES.map(() => true));
    expect(await readOnly(basic(OPERATOR.username, OPERATOR.password))).toEqual(QUEUE_NAMES.map(() => false));
  });

  it('an operator from the staff table may act (so the refusal above is about the role)', async () => {
    const queue = t.queue(QUEUE);
    const res0 = await t.app.inject({
      method: 'POST',
      url: '/login',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams(OPERATOR).toString(),
    });
    const cookie = cookiePair(res0.headers['set-cookie'], SESSION_COOKIE)!;
    // bull-board's UI echoes the XSRF-TOKEN cookie in X-XSRF-TOKEN (axios does it by default).
    const xsrf = cookiePair(res0.headers['set-cookie'], XSRF_COOKIE)!.split('=')[1]!;
    const withoutToken = await t.app.inject({ method: 'PUT', url: `/queues/api/queues/${QUEUE}/pause`, headers: { cookie } });
    expect(withoutToken.statusCode).toBe(403);
    expect(await queue.isPaused()).toBe(false);
    const res = await t.app.inject({ method: 'PUT', url: `/queues/api/queues/${QUEUE}/pause`, headers: { cookie, 'x-xsrf-token': xsrf } });
    expect(res.statusCode).toBe(200);
    expect(await queue.isPaused()).toBe(true);
    await queue.resume();
  });

  it('loses access at once when the account is removed', async () => {
    const cookie = await sessionOf(VIEWER);
    const auth = basic(VIEWER.username, VIEWER.password);
    // Warm the Basic cache so the removal must get past it.
    expect((await t.app.inject({ url: '/queues/api/queues', headers: { authorization: auth } })).statusCode).toBe(200);
    expect(await runStaffCommand(t.database.db, { kind: 'remove', username: VIEWER.username }, silent)).toBe(0);
    expect((await t.app.inject({ url: '/queues/api/queues', headers: { cookie } })).statusCode).toBe(401);
    expect((await t.app.inject({ url: '/queues/api/queues', headers: { authorization: auth } })).statusCode).toBe(401);
    // Re-created with the same name and password: the old session still does not come back.
    expect(await runStaffCommand(t.database.db, { kind: 'add', role: 'viewer', ...VIEWER }, silent)).toBe(0);
    expect((await t.app.inject({ url: '/queues/api/queues', headers: { cookie } })).statusCode).toBe(401);
  });
});

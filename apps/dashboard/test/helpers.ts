import { randomBytes } from 'node:crypto';
import { createDatabase, type Database } from '@platform/db';
import { cloneTemplateDatabase } from '@platform/db/testing';
import { createQueue, createRedis, waitReady } from '@platform/jobs';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { buildApp, type AppDeps } from '../src/app';

export const OPERATOR = { username: 'ops', password: 'env-operator-password' };

export function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

/** Pulls `name=value` of a cookie out of a Set-Cookie header, ready for a Cookie header. */
export function cookiePair(setCookie: string | string[] | undefined, name: string): string | undefined {
  const all = Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : [];
  const line = all.find((c) => c.startsWith(`${name}=`));
  return line?.split(';')[0];
}

export interface TestDashboard {
  app: FastifyInstance;
  database: Database;
  redis: Redis;
  prefix: string;
  databaseUrl: string;
  /** A queue object of our own on the same prefix, to look at what the dashboard did. */
  queue(name: string): Queue;
  close(): Promise<void>;
}

/** One cloned database, one Redis connection and one random queue prefix per test file. */
export async function startTestDashboard(overrides: Partial<AppDeps> = {}): Promise<TestDashboard> {
  const clone = await cloneTemplateDatabase(inject('pgAdminUrl'));
  const database = createDatabase({ url: clone.url, max: 4, applicationName: 'dashboard-test' });
  const redis = createRedis(inject('redisUrl'), 'producer');
  await waitReady(redis);
  const prefix = `dash-test-${randomBytes(6).toString('hex')}`;
  const app = await buildApp({
    db: database.db,
    redis,
    queuePrefix: prefix,
    operator: OPERATOR,
    sessionSecret: randomBytes(32).toString('base64url'),
    cookieSecure: 'auto',
    ...overrides,
  });
  await app.ready();
  const ownQueues: Queue[] = [];
  return {
    app,
    database,
    redis,
    prefix,
    databaseUrl: clone.url,
    queue(name) {
      const q = createQueue(name, redis, prefix);
      ownQueues.push(q);
      return q;
    },
    async close() {
      await app.close();
      await Promise.all(ownQueues.map((q) => q.close()));
      // Remove this file's queue keys: the Redis is shared by the whole run.
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
        if (keys.length > 0) await redis.del(...keys);
        cursor = next;
      } while (cursor !== '0');
      await database.close();
      redis.disconnect();
      await clone.drop();
    },
  };
}

export interface Session {
  /** A Cookie header carrying the session (and the readable XSRF-TOKEN). */
  cookie: string;
  /** The session's CSRF token, as our forms carry it. */
  csrf: string;
}

/** Signs in through the form, as a browser does. */
export async function signIn(app: FastifyInstance, user: { username: string; password: string }): Promise<Session> {
  const res = await app.inject({
    method: 'POST',
    url: '/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    payload: new URLSearchParams(user).toString(),
  });
  if (res.statusCode !== 303) throw new Error(`sign-in of ${user.username} answered ${res.statusCode}: ${res.body}`);
  const session = cookiePair(res.headers['set-cookie'], 'dashboard_session');
  const xsrf = cookiePair(res.headers['set-cookie'], 'XSRF-TOKEN');
  if (!session || !xsrf) throw new Error('sign-in set no session or XSRF cookie');
  return { cookie: `${session}; ${xsrf}`, csrf: decodeURIComponent(xsrf.slice(xsrf.indexOf('=') + 1)) };
}

/** A form post as our pages send it (with the CSRF field unless `csrf` is null). */
export function formPost(session: Session, url: string, fields: Record<string, string> = {}, csrf: string | null = session.csrf) {
  return {
    method: 'POST' as const,
    url,
    headers: { cookie: session.cookie, 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
    payload: new URLSearchParams({ ...fields, ...(csrf === null ? {} : { _csrf: csrf }) }).toString(),
  };
}

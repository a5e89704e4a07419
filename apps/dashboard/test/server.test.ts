import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cloneTemplateDatabase } from '@platform/db/testing';
import { EvictionPolicyError, QUEUE_NAMES } from '@platform/jobs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config';
import { startDashboard } from '../src/server';
import { freePort, startRedis, type RedisServer } from '../../../scripts/lib/services';

const PREFIX = `dash-server-${randomBytes(6).toString('hex')}`;
let clone: Awaited<ReturnType<typeof cloneTemplateDatabase>>;
beforeAll(async () => {
  clone = await cloneTemplateDatabase(inject('pgAdminUrl'));
});
afterAll(async () => {
  await clone?.drop();
  // The queues' keys under this file's prefix: the Redis is shared by the whole run.
  const r = new Redis(inject('redisUrl'));
  const keys = await r.keys(`${PREFIX}:*`);
  if (keys.length > 0) await r.del(...keys);
  await r.quit();
});

function env(overrides: Record<string, string> = {}) {
  return {
    DATABASE_URL: clone.url,
    REDIS_URL: inject('redisUrl'),
    DASHBOARD_PORT: '0',
    DASHBOARD_HOST: '127.0.0.1',
    DASHBOARD_USER: 'ops',
    DASHBOARD_PASSWORD: 'env-operator-password',
    QUEUE_PREFIX: PREFIX,
    LOG_LEVEL: 'silent',
    ...overrides,
  };
}

describe('the dashboard process', () => {
  it('parses its configuration once, with the documented defaults', () => {
    const c = loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y' });
    expect(c.DASHBOARD_PORT).toBe(3001);
    expect(c.QUEUE_PREFIX).toBe('{jobs}');
    expect(c.DASHBOARD_USER).toBeUndefined();
    expect(() => loadConfig({ REDIS_URL: 'redis://y' })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y', DASHBOARD_USER: 'ops' })).toThrow(/set together/);
    expect(() => loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y', SESSION_SECRET: 'short' })).toThrow(/SESSION_SECRET/);
  });

  it('listens, answers over real HTTP, and closes', async () => {
    const running = await startDashboard(loadConfig(env()));
    try {
      expect((await fetch(`${running.url}/healthz`)).status).toBe(200);
      const unauth = await fetch(`${running.url}/queues/api/queues`);
      expect(unauth.status).toBe(401);
      const res = await fetch(`${running.url}/queues/api/queues`, {
        headers: { authorization: `Basic ${Buffer.from('ops:env-operator-password').toString('base64')}` },
      });
      expect(res.status).toBe(200);
      expect(((await res.json()) as { queues: unknown[] }).queues).toHaveLength(QUEUE_NAMES.length);
      const page = await fetch(`${running.url}/`, { headers: { accept: 'text/html' }, redirect: 'manual' });
      expect(page.status).toBe(302);
      expect(page.headers.get('location')).toBe('/login?next=%2F');
    } finally {
      await running.close();
    }
    await expect(fetch(`${running.url}/healthz`)).rejects.toThrow();
  });

  it('runs as `npm start` does (tsx src/server.ts) and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      cwd: path.resolve(import.meta.dirname, '..'),
      env: { ...process.env, ...env({ DASHBOARD_PORT: String(port), LOG_LEVEL: 'info' }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    try {
      const deadline = Date.now() + 30_000;
      while (!output.includes('dashboard listening')) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`dashboard did not start:\n${output}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(output).toMatch(/"signal":"SIGTERM"/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  describe('on a Redis that may evict keys', () => {
    let dir: string;
    let redis: RedisServer;
    beforeAll(async () => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'dash-evict-'));
      redis = await startRedis({ dir, persistent: false });
      const admin = new Redis(redis.url);
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      await admin.quit();
    });
    afterAll(async () => {
      await redis?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('refuses to start', async () => {
      await expect(startDashboard(loadConfig(env({ REDIS_URL: redis.url })))).rejects.toBeInstanceOf(EvictionPolicyError);
    });
  });
});

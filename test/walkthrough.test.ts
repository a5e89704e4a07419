import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPlatform, type Platform } from '../scripts/lib/platform';
import { createTestEnv, ROOT, type TestEnv } from './helpers';

/**
 * Runs the README's walkthrough, block by block as written, against a platform started the way
 * `npm start` starts it, so the README cannot drift from what works.
 */
function walkthroughBlocks(): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Walkthrough');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

let t: TestEnv;
let platform: Platform;
let work: string;

beforeAll(async () => {
  t = await createTestEnv();
  work = mkdtempSync(path.join(os.tmpdir(), 'walkthrough-'));
  platform = await startPlatform({
    dataDir: path.join(work, '.data'),
    databaseUrl: t.databaseUrl,
    redisUrl: t.redisUrl,
    ports: { api: 0, dashboard: 0, worker: 0 },
    env: { QUEUE_PREFIX: t.queuePrefix, LOG_LEVEL: 'warn' },
    quiet: true,
  });
}, 120_000);

afterAll(async () => {
  await platform?.stop();
  rmSync(work, { recursive: true, force: true });
  await t?.cleanup();
});

describe('README walkthrough', () => {
  it('runs as written: the 10,000-operation job completes and the rows read back exactly', async () => {
    const blocks = walkthroughBlocks();
    expect(blocks.length).toBeGreaterThanOrEqual(5);
    const script = ['set -e', ...blocks, 'echo "::RESULT::$TABLE::$TEAM_TOKEN::$JOB"'].join('\n');
    const env: Record<string, string | undefined> = { ...process.env, API: platform.apiUrl };
    delete env.ADMIN_TOKEN; // the walkthrough reads it from .data/, as a newcomer's would
    const run = spawnSync('bash', ['-c', script], { cwd: work, env, encoding: 'utf8', timeout: 120_000 });
    expect(run.stderr).not.toMatch(/error|fail/i);
    expect(run.status).toBe(0);
    const [, table, token, job] = /::RESULT::(.+)::(.+)::(.+)/.exec(run.stdout)!;
    expect(run.stdout).toContain('completed 10000/10000');

    const auth = { authorization: `Bearer ${token}` };
    const j: unknown = await (await fetch(`${platform.apiUrl}/v1/jobs/${job}`, { headers: auth })).json();
    expect(j).toMatchObject({ status: 'completed', progress: { done: 10_000, total: 10_000 }, result: { inserted: 10_000 } });
    const seen = new Map<string, { title: string; price: number }>();
    let cursor: string | null = null;
    do {
      const page: { rows: { identifier: string; draftData: { title: string; price: number } }[]; nextCursor: string | null } = (await (
        await fetch(`${platform.apiUrl}/v1/cms-tables/${table}/rows?limit=500${cursor ? `&cursor=${cursor}` : ''}`, { headers: auth })
      ).json()) as typeof page;
      for (const r of page.rows) {
        expect(seen.has(r.identifier)).toBe(false);
        seen.set(r.identifier, r.draftData);
      }
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen.size).toBe(10_000);
    for (const i of [0, 1, 4_999, 9_999]) expect(seen.get(`sku-${i}`)).toEqual({ title: `Product ${i}`, price: i });
  }, 180_000);

  it('the dashboard shows the queues after sign-in and refuses without it', async () => {
    const anon = await fetch(`${platform.dashboardUrl}/queues/api/queues`);
    expect(anon.status).toBe(401);
    expect(((await anon.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const page = await fetch(`${platform.dashboardUrl}/`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect(page.status).toBe(302);
    expect(page.headers.get('location')).toMatch(/^\/login/);
    const basic = `Basic ${Buffer.from(`${platform.dashboardUser}:${platform.dashboardPassword}`).toString('base64')}`;
    const queues = await fetch(`${platform.dashboardUrl}/queues/api/queues`, { headers: { authorization: basic } });
    expect(queues.status).toBe(200);
    const body = JSON.stringify(await queues.json());
    expect(body).toContain('cms-bulk-write');
  });
});

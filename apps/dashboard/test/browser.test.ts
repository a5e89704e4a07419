import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { createTeam, insertJob, jobChunks, recordJobEvent, uuidv7, type NewJobRow } from '@platform/db';
import { bulkWriteJob, exportJob, importJob, Producer, publishJob, QUEUE_NAMES } from '@platform/jobs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStaffCommand } from '../src/staff-cli';
import { OPERATOR, startTestDashboard, type TestDashboard } from './helpers';

/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core): sign in, find a
 * job by id, read its page, see charts drawn, cancel as an operator and find the audit entry; a
 * viewer cannot act. Every request the browser makes is checked to stay on this server.
 *
 * DASHBOARD_SCREENSHOTS_DIR=docs/screenshots saves screenshots of the main pages there.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const SHOTS = process.env.DASHBOARD_SCREENSHOTS_DIR ? path.resolve(import.meta.dirname, '../../..', process.env.DASHBOARD_SCREENSHOTS_DIR) : undefined;
const VIEWER = { username: 'vera', password: 'viewer-password-1' };

let t: TestDashboard;
let base: string;
let browser: Browser;
let producer: Producer;
const offsite: string[] = [];
const seeded: { failed?: string; queued?: string; queued2?: string } = {};

async function seed(): Promise<void> {
  const db = t.database.db;
  const teams = [];
  for (const name of ['acme', 'globex', 'initech', 'umbrella', 'hooli']) teams.push(await createTeam(db, name));
  const now = Date.now();
  const defs = [bulkWriteJob, importJob, exportJob, publishJob];
  const payloadOf = (type: string) =>
    type === bulkWriteJob.name
      ? { tableId: uuidv7(), blobKey: `bulk/${uuidv7()}.ndjson`, operationCount: 25_000 }
      : type === importJob.name
        ? { tableId: uuidv7(), blobKey: `imports/${uuidv7()}.csv`, format: 'csv', mode: 'insert', onError: 'abort' }
        : type === exportJob.name
          ? { tableId: uuidv7(), format: 'csv', published: false }
          : { projectId: uuidv7() };
  const rows: NewJobRow[] = [];
  for (let i = 0; i < 60; i++) {
    const def = defs[i % 4]!;
    const status = (['completed', 'completed', 'completed', 'failed', 'active', 'queued'] as const)[i % 6]!;
    const created = new Date(now - (60 - i) * 47_000);
    rows.push({
      id: uuidv7(created.getTime()),
      teamId: teams[i % 3 === 0 ? 0 : (i % 5)]!.id,
      type: def.name,
      queue: def.queue,
      status,
      payload: payloadOf(def.name),
      progressDone: status === 'completed' ? 25_000 : status === 'queued' ? 0 : 9_000,
      progressTotal: 25_000,
      createdAt: created,
      startedAt: status === 'queued' ? null : new Date(created.getTime() + 2_000),
      finishedAt: status === 'completed' || status === 'failed' ? new Date(created.getTime() + 40_000) : null,
      ...(status === 'failed' ? { error: { code: 'internal', message: 'deadlock detected', stack: 'Error: deadlock detected\n    at commit (packages/jobs/src/chunk-runner.ts:131:9)\n    at runChunks (packages/jobs/src/chunk-runner.ts:183:5)' } } : {}),
    });
  }
  for (const r of rows) await insertJob(db, r);

  // The job whose page we read: two runs (a retry after a lock timeout), then a failure.
  const failed = await insertJob(db, {
    id: uuidv7(),
    teamId: teams[0]!.id,
    type: bulkWriteJob.name,
    queue: bulkWriteJob.queue,
    status: 'failed',
    payload: { tableId: '0195a3c4-0000-7000-8000-00000000beef', blobKey: 'bulk/0195a3c4-run.ndjson', operationCount: 25_000 },
    progressDone: 12_000,
    progressTotal: 25_000,
    attempts: 1,
    lease: 2,
    startedAt: new Date(now - 90_000),
    finishedAt: new Date(now - 30_000),
    createdAt: new Date(now - 95_000),
    error: { code: 'internal', message: 'canceling statement due to lock timeout', stack: 'Error: canceling statement due to lock timeout\n    at Parser.parseErrorMessage (pg-protocol/src/parser.ts:369:69)\n    at JobRun.commit (packages/jobs/src/chunk-runner.ts:131:9)' },
  });
  seeded.failed = failed.id;
  await db.insert(jobChunks).values(
    Array.from({ length: 12 }, (_, i) => ({ jobId: failed.id, seq: i + 1, lease: i < 7 ? 1 : 2, rows: i === 0 ? 0 : 1_000, durationMs: 35 + ((i * 37) % 60), committedAt: new Date(now - 80_000 + i * 4_000) })),
  );
  await recordJobEvent(db, { jobId: failed.id, kind: 'claimed', detail: { lease: 1, worker: 'worker-7f3a' }, at: new Date(now - 90_000) });
  await recordJobEvent(db, { jobId: failed.id, kind: 'retry', detail: { lease: 1, error: 'lock timeout' }, at: new Date(now - 55_000) });
  await recordJobEvent(db, { jobId: failed.id, kind: 'claimed', detail: { lease: 2, worker: 'worker-91c2' }, at: new Date(now - 52_000) });
  await recordJobEvent(db, { jobId: failed.id, kind: 'failed', detail: { lease: 2 }, at: new Date(now - 30_000) });

  // Two queued jobs, handed to BullMQ: one the operator cancels, one the viewer may not.
  for (const key of ['queued', 'queued2'] as const) {
    const q = await insertJob(db, { id: uuidv7(), teamId: teams[1]!.id, type: exportJob.name, queue: exportJob.queue, status: 'queued', payload: payloadOf(exportJob.name) });
    await producer.dispatch(q);
    seeded[key] = q.id;
  }

  // A day of 10-second samples, shaped in waves.
  await t.database.pool.query(
    `insert into queue_samples (queue, step_s, at, waiting, active, delayed, failed, completed_count, failed_count)
     select q.name, 10, to_timestamp(floor(extract(epoch from now()) / 10) * 10 - i * 10),
            round(40 * greatest(0, sin(i / 30.0 + q.n)) + q.n * 3), least(4, round(2 + 3 * greatest(0, sin(i / 30.0 + q.n)))),
            case when (i + q.n) % 50 = 0 then 2 else 0 end, q.n,
            round(6 * greatest(0, sin(i / 30.0 + q.n)) + 1), case when i % 17 = q.n then 1 else 0 end
     from unnest($1::text[]) with ordinality as q(name, n), generate_series(0, 8639) as i`,
    [QUEUE_NAMES],
  );
  // 5-minute averages before that, back 30 days: busier in working hours (UTC).
  await t.database.pool.query(
    `insert into queue_samples (queue, step_s, at, waiting, active, delayed, failed, completed_count, failed_count)
     select q.name, 300, s.at, 30 * s.busy + q.n, round(3 * s.busy), 0, q.n, round(150 * s.busy), round(3 * s.busy)
     from unnest($1::text[]) with ordinality as q(name, n),
          lateral (select at, case when extract(hour from at at time zone 'UTC') between 8 and 18 then 1 else 0.2 end as busy
                   from generate_series(to_timestamp(floor(extract(epoch from now() - interval '24 hours') / 300) * 300) - interval '30 days',
                                        to_timestamp(floor(extract(epoch from now() - interval '24 hours') / 300) * 300), interval '5 minutes') as at) s`,
    [QUEUE_NAMES],
  );
}

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  // Nothing may leave this server: record and refuse any other address.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base)) return route.continue();
    offsite.push(url);
    return route.abort();
  });
  return context;
}

async function signInAs(page: Page, user: { username: string; password: string }) {
  await page.goto(`${base}/`);
  expect(page.url()).toContain('/login?next=');
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
}

/** Waits for uPlot to draw into the chart `id` and returns its canvas size and painted pixels. */
async function drawnChart(page: Page, id: string) {
  await page.waitForSelector(`#${id}[data-drawn="true"] canvas`, { timeout: 10_000 });
  return (await page.evaluate(`(() => {
    const c = document.querySelector('#${id} canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) painted++;
    return { width: c.width, height: c.height, painted };
  })()`)) as { width: number; height: number; painted: number };
}

async function shot(page: Page, name: string, fullPage = true) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), as .ci/run does`);
  t = await startTestDashboard();
  producer = new Producer(t.redis, t.prefix);
  await runStaffCommand(t.database.db, { kind: 'add', role: 'viewer', ...VIEWER }, { out: () => {}, err: () => {} });
  await seed();
  base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});

afterAll(async () => {
  await browser?.close();
  await producer?.close();
  await t?.close();
});

describe('the dashboard in a browser', () => {
  it('an operator signs in, finds a job by id, reads it, sees the charts drawn, cancels a job and finds the audit entry', async () => {
    const context = await newContext();
    const page = await context.newPage();
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.accept();
    });
    const consoleErrors: string[] = [];
    page.on('console', (m) => {
      // A browser may ask for /favicon.ico on its own; there is none.
      if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) consoleErrors.push(m.text());
    });

    await signInAs(page, OPERATOR);
    expect(await page.textContent('header .who')).toContain('ops (operator)');
    // The overview's charts: uPlot, served by this dashboard, drew into real canvases.
    for (const id of ['overview-depth', 'overview-throughput']) {
      const c = await drawnChart(page, id);
      expect(c.width, id).toBeGreaterThan(200);
      expect(c.height, id).toBeGreaterThan(100);
      expect(c.painted, id).toBeGreaterThan(1_000);
    }
    await shot(page, 'overview', false);

    // Find a job by its id from the overview's search box, then open it.
    await page.fill('input[name=id]', seeded.failed!);
    await Promise.all([page.waitForURL(/\/jobs\?id=/), page.click('form[role=search] button[type=submit]')]);
    expect(await page.locator('#jobs tbody tr').count()).toBe(1);
    await Promise.all([page.waitForURL(`${base}/jobs/${seeded.failed}`), page.click(`a[href="/jobs/${seeded.failed}"]`)]);
    expect(await page.textContent('#job-status')).toBe('failed');
    const text = (await page.textContent('main'))!;
    for (const s of [bulkWriteJob.name, 'acme', '12000 / 25000 (48%)', 'bulk/0195a3c4-run.ndjson', 'canceling statement due to lock timeout', 'worker-91c2']) expect(text).toContain(s);
    expect(await page.textContent('#stack')).toContain('JobRun.commit');
    expect(await page.locator('#chunks tbody tr').count()).toBe(12);
    const timeline = await drawnChart(page, 'chunk-durations');
    expect(timeline.painted).toBeGreaterThan(100);
    await shot(page, 'job-detail');

    // The search page, by team and status.
    await page.goto(`${base}/jobs?team=acme&status=completed`);
    expect(await page.locator('#jobs tbody tr').count()).toBeGreaterThan(3);
    await shot(page, 'jobs');

    // The charts page: the last day and the last month.
    for (const range of ['day', 'month']) {
      await page.goto(`${base}/charts?range=${range}`);
      const c = await drawnChart(page, 'chart-depth');
      expect(c.painted, range).toBeGreaterThan(1_000);
      await drawnChart(page, 'chart-failure-rate');
      if (range === 'day') await shot(page, 'charts');
    }
    await page.goto(`${base}/teams`);
    expect(await page.locator('#backlog tbody tr').count()).toBeGreaterThan(0);
    await shot(page, 'teams');

    // Cancel a queued job: the confirm dialog, then the job's page says so.
    await page.goto(`${base}/jobs/${seeded.queued}`);
    await Promise.all([page.waitForURL(/done=cancelled/), page.click('button:has-text("Cancel job")')]);
    expect(dialogs).toEqual(['Cancel this queued job?']);
    expect(await page.textContent('#job-status')).toBe('cancelled');
    expect(await page.textContent('main')).toContain('Cancelled: the job was queued and ends now.');
    expect(await page.textContent('#audit')).toContain('ops (operator, session)');
    // And the audit log lists it, naming the operator and the job.
    await page.goto(`${base}/audit`);
    const first = page.locator('#audit tbody tr').first();
    expect(await first.textContent()).toContain('job.cancel');
    expect(await first.textContent()).toContain('ops');
    expect(await first.locator(`a[href="/jobs/${seeded.queued}"]`).count()).toBe(1);
    await shot(page, 'audit');

    // bull-board's UI calls its API with axios, which echoes the XSRF-TOKEN cookie in X-XSRF-TOKEN:
    // the same call from its page, with and without that header.
    const boardCall = page.waitForRequest((r) => r.url().startsWith(`${base}/queues/api/queues`), { timeout: 10_000 });
    await page.goto(`${base}/queues`);
    await page.waitForSelector('text=Platform queues', { timeout: 10_000 });
    const xsrf = (await context.cookies()).find((c) => c.name === 'XSRF-TOKEN')!.value;
    expect((await boardCall).headers()['x-xsrf-token']).toBe(xsrf);
    const statuses = (await page.evaluate(`(async () => {
      const token = decodeURIComponent((document.cookie.match(/(?:^|; )XSRF-TOKEN=([^;]*)/) || [])[1] || '');
      const url = '/queues/api/queues/${QUEUE_NAMES[0]}/pause';
      const without = await fetch(url, { method: 'PUT' });
      const withToken = await fetch(url, { method: 'PUT', headers: { 'X-XSRF-TOKEN': token } });
      return [token.length > 0, without.status, withToken.status];
    })()`)) as [boolean, number, number];
    expect(statuses).toEqual([true, 403, 200]);
    const paused = t.queue(QUEUE_NAMES[0]!);
    expect(await paused.isPaused()).toBe(true);
    await paused.resume();

    expect(consoleErrors.filter((e) => !/status of 403/.test(e))).toEqual([]);
    expect(offsite).toEqual([]);
    await context.close();
  });

  it('a viewer reads the same pages but has no buttons, and an action posted anyway answers 403', async () => {
    const context = await newContext();
    const page = await context.newPage();
    await signInAs(page, VIEWER);
    await page.goto(`${base}/jobs/${seeded.queued2}`);
    expect(await page.textContent('#job-status')).toBe('queued');
    expect(await page.locator('button:has-text("Cancel job")').count()).toBe(0);

    // The viewer's own session, with its own valid CSRF token, posting the operator's form.
    const token = (await context.cookies()).find((c) => c.name === 'XSRF-TOKEN')!.value;
    const res = await context.request.post(`${base}/jobs/${seeded.queued2}/cancel`, { form: { _csrf: token }, headers: { accept: 'text/html' } });
    expect(res.status()).toBe(403);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('forbidden');
    await page.reload();
    expect(await page.textContent('#job-status')).toBe('queued');
    // bull-board opens read-only for them.
    await page.goto(`${base}/queues`);
    await page.waitForSelector('text=Platform queues', { timeout: 10_000 });
    expect(offsite).toEqual([]);
    await context.close();
  });
});

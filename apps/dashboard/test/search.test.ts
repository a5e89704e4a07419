import { createTeam, insertJob, jobChunks, recordJobEvent, recordQueueSamples, uuidv7 } from '@platform/db';
import { bulkWriteJob, exportJob, QUEUE_NAMES } from '@platform/jobs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { basic, OPERATOR, startTestDashboard, type TestDashboard } from './helpers';

/** Finding jobs and reading them: the history search, a job's page, the teams view and the charts' data. */

let t: TestDashboard;
const auth = { authorization: basic(OPERATOR.username, OPERATOR.password) };
const PAGE = { ...auth, accept: 'text/html' };
let acme: { id: string; name: string };
let globex: { id: string; name: string };
const T0 = Date.parse('2025-03-01T00:00:00Z');

beforeAll(async () => {
  t = await startTestDashboard();
  acme = await createTeam(t.database.db, 'acme');
  globex = await createTeam(t.database.db, 'globex');
  // 120 jobs for acme, one a minute, cycling through statuses and two types; 30 for globex.
  const statuses = ['queued', 'active', 'completed', 'failed', 'cancelled'] as const;
  await t.database.pool.query(
    `insert into jobs (id, team_id, type, queue, status, payload, created_at, finished_at)
     select gen_random_uuid(), case when i <= 120 then $1::uuid else $2::uuid end,
            case when i % 2 = 0 then $3 else $4 end, case when i % 2 = 0 then $5 else $6 end,
            ($7::text[])[1 + i % 5]::job_status, '{}'::jsonb,
            $8::timestamptz + make_interval(mins => i),
            case when i % 5 in (2, 3, 4) then $8::timestamptz + make_interval(mins => i + 1) end
     from generate_series(1, 150) i`,
    [acme.id, globex.id, bulkWriteJob.name, exportJob.name, bulkWriteJob.queue, exportJob.queue, statuses, new Date(T0).toISOString()],
  );
});
afterAll(async () => {
  await t?.close();
});

type ApiJob = { id: string; teamId: string; type: string; status: string; createdAt: string };
async function api(query: string) {
  const res = await t.app.inject({ url: `/api/jobs${query}`, headers: auth });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { jobs: ApiJob[]; nextCursor: string | null };
}

async function all(query: string): Promise<ApiJob[]> {
  const out: ApiJob[] = [];
  let cursor: string | null = null;
  do {
    const sep: string = query ? '&' : '?';
    const page: { jobs: ApiJob[]; nextCursor: string | null } = await api(`${query}${cursor ? `${sep}cursor=${cursor}` : ''}`);
    out.push(...page.jobs);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}

describe('job history search', () => {
  it('filters by team, status and type, newest first, and pages through every match exactly once', async () => {
    const failed = await all(`?team=${acme.id}&status=failed&limit=7`);
    expect(failed).toHaveLength(24);
    expect(new Set(failed.map((j) => j.id)).size).toBe(24);
    expect(failed.every((j) => j.teamId === acme.id && j.status === 'failed')).toBe(true);
    const times = failed.map((j) => Date.parse(j.createdAt));
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    const byName = await all(`?team=acme&status=failed&type=${bulkWriteJob.name}`);
    expect(byName.length).toBe(12);
    expect(byName.every((j) => j.type === bulkWriteJob.name)).toBe(true);
    expect((await all('?limit=40')).length).toBe(150);
    expect((await all(`?team=${globex.id}`)).length).toBe(30);
  });

  it('filters by a creation time range (UTC, as the datetime fields send it)', async () => {
    const from = '2025-03-01T00:10';
    const to = '2025-03-01T00:20';
    const jobs = await all(`?team=acme&from=${from}&to=${to}`);
    // Created at minutes 10..19 (to is exclusive).
    expect(jobs).toHaveLength(10);
    expect(jobs[0]!.createdAt).toBe('2025-03-01T00:19:00.000Z');
    expect(jobs.at(-1)!.createdAt).toBe('2025-03-01T00:10:00.000Z');
  });

  it('finds one job by its id, or by the BullMQ id bull-board shows', async () => {
    const [some] = (await api('?team=globex&limit=1')).jobs;
    expect((await api(`?id=${some!.id}`)).jobs.map((j) => j.id)).toEqual([some!.id]);
    expect((await api(`?id=${some!.id}.3`)).jobs.map((j) => j.id)).toEqual([some!.id]);
    expect((await api(`?id=${uuidv7()}`)).jobs).toEqual([]);

    const page = await t.app.inject({ url: `/jobs?id=${some!.id}`, headers: PAGE });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain(`href="/jobs/${some!.id}"`);
  });

  it('says what is wrong with a query instead of guessing', async () => {
    for (const q of ['?id=nope', '?status=exploded', '?type=nope', '?from=yesterday', '?cursor=abc', '?limit=0']) {
      const res = await t.app.inject({ url: `/api/jobs${q}`, headers: auth });
      expect(res.statusCode, q).toBe(400);
      expect(res.json()).toMatchObject({ error: { code: 'validation_failed' } });
      const html = await t.app.inject({ url: `/jobs${q}`, headers: PAGE });
      expect(html.statusCode, q).toBe(400);
      expect(html.body).toContain('role="alert"');
    }
    const none = await t.app.inject({ url: '/jobs?team=nobody-here', headers: PAGE });
    expect(none.body).toContain('No team has the id or name');
  });

  it('renders the search page with the form filled in and a next-page link', async () => {
    const res = await t.app.inject({ url: `/jobs?team=acme&status=completed&limit=5`, headers: PAGE });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain('name="team" value="acme"');
    expect(res.body).toMatch(/<option value="completed" selected>/);
    expect(res.body.match(/<tr><td><a href="\/jobs\//g)).toHaveLength(5);
    expect(res.body).toMatch(/href="\/jobs\?team=acme&amp;status=completed&amp;limit=5&amp;cursor=[^"]+" rel="next"/);
  });
});

describe('a job page', () => {
  it('shows type, team, status, timings, attempts, progress, payload, error with stack, runs, events and chunk timeline', async () => {
    const job = await insertJob(t.database.db, {
      id: uuidv7(),
      teamId: acme.id,
      type: bulkWriteJob.name,
      queue: bulkWriteJob.queue,
      status: 'failed',
      payload: { tableId: '0195a000-0000-7000-8000-000000000001', blobKey: 'bulk/abc.ndjson', operationCount: 3000 },
      progressDone: 2000,
      progressTotal: 3000,
      attempts: 2,
      lease: 2,
      startedAt: new Date(Date.now() - 60_000),
      finishedAt: new Date(),
      error: { code: 'internal', message: 'boom <b>', stack: 'Error: boom <script>alert(1)</script>\n    at chunk (processor.ts:1:1)' },
    });
    await t.database.db.insert(jobChunks).values([
      { jobId: job.id, seq: 1, lease: 1, rows: 1000, durationMs: 40 },
      { jobId: job.id, seq: 2, lease: 2, rows: 1000, durationMs: 55 },
    ]);
    await recordJobEvent(t.database.db, { jobId: job.id, kind: 'claimed', detail: { lease: 1, worker: 'w-1' } });
    await recordJobEvent(t.database.db, { jobId: job.id, kind: 'retry', detail: { lease: 1, error: 'lock timeout' } });
    await recordJobEvent(t.database.db, { jobId: job.id, kind: 'failed', detail: { lease: 2 } });

    const res = await t.app.inject({ url: `/jobs/${job.id}`, headers: PAGE });
    expect(res.statusCode).toBe(200);
    const b = res.body;
    for (const text of [bulkWriteJob.name, 'acme', 'id="job-status">failed', '2000 / 3000 (66%)', 'bulk/abc.ndjson', '3000', '<code>internal</code>', 'boom &lt;b&gt;']) {
      expect(b, text).toContain(text);
    }
    expect(b).toContain('<pre id="stack">Error: boom &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(b).not.toContain('<script>alert(1)');
    expect(b).toMatch(/waited/);
    // Runs by lease, the events in order, the chunk table and the chart's data block.
    expect(b).toMatch(/<td class="num">1<\/td><td class="num">1<\/td><td>1–1<\/td><td class="num">1000<\/td>/);
    expect(b.indexOf('>claimed<')).toBeLessThan(b.indexOf('>retry<'));
    expect(b).toContain('lock timeout');
    expect(b).toContain('← new run');
    expect(b).toContain('<script type="application/json" id="chart-data">');
    expect(b).toContain('<script src="/assets/uPlot.iife.min.js" defer></script>');

    const json = await t.app.inject({ url: `/api/jobs/${job.id}`, headers: auth });
    expect(json.json()).toMatchObject({ job: { id: job.id, status: 'failed' }, runs: [{ lease: 1 }, { lease: 2 }], events: [{ kind: 'claimed' }, { kind: 'retry' }, { kind: 'failed' }] });
  });

  it('answers 404 for an unknown or malformed id', async () => {
    expect((await t.app.inject({ url: `/jobs/${uuidv7()}`, headers: PAGE })).statusCode).toBe(404);
    expect((await t.app.inject({ url: '/jobs/../../etc', headers: PAGE })).statusCode).toBe(404);
  });
});

describe('teams right now', () => {
  it('lists each team’s backlog, running jobs and wait, the biggest backlog first', async () => {
    const res = await t.app.inject({ url: '/api/teams/backlog', headers: auth });
    const teams = (res.json() as { teams: Array<{ teamName: string; queued: number; active: number; waitSeconds: number }> }).teams;
    expect(teams.map((x) => [x.teamName, x.queued, x.active])).toEqual([
      ['acme', 24, 24],
      ['globex', 6, 6],
    ]);
    // The oldest queued job of acme was created at T0 + 5 min.
    expect(teams[0]!.waitSeconds).toBeGreaterThan((Date.now() - T0) / 1000 - 400);
    const page = await t.app.inject({ url: '/teams', headers: PAGE });
    expect(page.body).toContain(`href="/jobs?team=${acme.id}&amp;status=queued">24</a>`);
  });
});

describe('charts', () => {
  it('serve the last hour, day and month from the samples, with uPlot from this server', async () => {
    const now = Date.now();
    const step = 10_000;
    const end = Math.floor(now / step) * step;
    const rows = [];
    for (let i = 0; i < 30; i++) {
      for (const queue of QUEUE_NAMES) {
        rows.push({ queue, stepS: 10, at: new Date(end - i * step), waiting: 5, active: 2, delayed: 1, failed: 0, completedCount: 3, failedCount: 1 });
      }
    }
    await recordQueueSamples(t.database.db, rows);
    const hour = (await t.app.inject({ url: '/api/charts?range=hour', headers: auth })).json() as {
      points: number;
      charts: Array<{ id: string; x: number[]; series: Array<{ label: string; values: Array<number | null> }> }>;
    };
    expect(hour.points).toBe(30 * QUEUE_NAMES.length);
    const depth = hour.charts.find((c) => c.id === 'chart-depth')!;
    expect(depth.x).toHaveLength(360);
    const waiting = depth.series.find((s) => s.label === 'waiting')!.values;
    expect(waiting.filter((v) => v !== null)).toHaveLength(30);
    expect(waiting.find((v) => v !== null)).toBe(5 * QUEUE_NAMES.length);
    const throughput = hour.charts.find((c) => c.id === 'chart-throughput')!;
    // 3 completions per 10 s per queue = 18/min per queue.
    expect(throughput.series[0]!.values.find((v) => v !== null)).toBe(18 * QUEUE_NAMES.length);
    const rate = hour.charts.find((c) => c.id === 'chart-failure-rate')!;
    expect(rate.series[0]!.values.find((v) => v !== null)).toBe(25);

    for (const range of ['day', 'month']) {
      const r = (await t.app.inject({ url: `/api/charts?range=${range}&queue=${QUEUE_NAMES[0]}`, headers: auth })).json() as { charts: Array<{ id: string; series: Array<{ values: Array<number | null> }> }> };
      expect(r.charts.find((c) => c.id === 'chart-depth')!.series[0]!.values.some((v) => v === 5)).toBe(true);
    }

    const page = await t.app.inject({ url: '/charts?range=day', headers: PAGE });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.body).not.toMatch(/(src|href)="(https?:)?\/\//);
    const lib = await t.app.inject({ url: '/assets/uPlot.iife.min.js', headers: auth });
    expect(lib.statusCode).toBe(200);
    expect(lib.headers['content-type']).toMatch(/javascript/);
    expect(lib.body).toContain('uPlot');
    expect((await t.app.inject({ url: '/assets/uPlot.iife.min.js' })).statusCode).toBe(401);
  });
});

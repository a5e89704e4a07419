import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { partEnds } from '@platform/jobs/processors';
import { loadConfig } from '../src/config';
import { startWorker, type WorkerRuntime } from '../src/create-worker';
import { bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { createProject, createTable, createTeam, POST_FIELDS } from '../../api/test/support';

/**
 * Chunks cut short: a chunk is written in parts, and when its time runs short after a part the
 * worker commits the parts written, with their checkpoint, and the parts left as the next chunk.
 * Here the chunk budget is 1 ms and chunks are 1,000 rows (4 parts of 250), so every chunk of these
 * imports and bulk writes is cut after each part: the jobs advance 250 rows a transaction, and
 * must end exactly as uncut ones do. Real worker runtime, Redis and PostgreSQL.
 */
const CHUNK = 1_000;
/** The rows of each chunk of a pass over `n` rows when every chunk is cut after each of its parts. */
function cutPass(n: number): number[] {
  const out: number[] = [];
  for (let at = 0; at < n; at += CHUNK) {
    let from = 0;
    for (const to of partEnds(Math.min(CHUNK, n - at))) {
      out.push(to - from);
      from = to;
    }
  }
  return out;
}
const PASS = cutPass(2_600);
let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime;
let token: string;
let projectId: string;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  worker = await startWorker(
    loadConfig({
      ...t.env,
      WORKER_PORT: '0',
      WORKER_CHUNK_SIZE: String(CHUNK),
      WORKER_CHUNK_MIN: String(CHUNK),
      WORKER_CHUNK_MAX: String(CHUNK),
      WORKER_CHUNK_BUDGET_MS: '1',
      // Once in this process: the first job's 14th chunk fails after its first part, before its
      // commit. It is the third of its write pass (validate pass: 10 chunks, then the chunk that
      // starts the write pass): parts 3–4 of the pass's first 1,000 rows, left by two cuts.
      CHUNK_FAULT: 'throw@14',
    }),
    pino({ level: 'warn' }),
  );
  token = (await createTeam(api, 'cutters')).token;
  projectId = await createProject(api, token, 'p');
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

const newTable = () => createTable(api, token, projectId, POST_FIELDS, `t-${Math.random().toString(36).slice(2, 8)}`);

async function finished(jobId: string) {
  return waitFor(
    async () => {
      const j = (await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}`, headers: bearer(token) })).json();
      return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 25, what: `job ${jobId} to end` },
  );
}

async function importFile(tableId: string, body: string, query: string) {
  const res = await api.inject({
    method: 'POST',
    url: `/v1/cms-tables/${tableId}/imports?${query}`,
    headers: { ...bearer(token), 'content-type': 'text/csv' },
    payload: body,
  });
  expect(res.statusCode, res.body).toBe(202);
  return finished(res.json().id);
}

async function liveRows(tableId: string): Promise<Map<string, { title: string; views?: number }>> {
  const r = await t.database.pool.query('select identifier, draft_data from cms_rows where table_id = $1 and deleted_at is null', [tableId]);
  return new Map(r.rows.map((x) => [x.identifier, x.draft_data]));
}

/** Rows per writing chunk of the job, in order. */
async function chunkRows(jobId: string): Promise<number[]> {
  const r = await t.database.pool.query<{ rows: number }>('select rows from job_chunks where job_id = $1 and rows > 0 order by seq', [jobId]);
  return r.rows.map((x) => x.rows);
}

const cell = (v: string) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

/**
 * 2,600 CSV records, every 7th spanning three lines, and (when `withBad`) twelve bad ones on both
 * sides of part boundaries: non-numeric views, a missing title, an identifier repeating a good row
 * of an earlier part or chunk.
 */
function csvFile(withBad: boolean) {
  const lines = ['identifier,title,views'];
  let line = 2;
  const bad: number[] = [];
  const badViews = [249, 250, 1_001, 2_599];
  const noTitle = [499, 500, 1_750, 0];
  const repeats = [251, 752, 1_000, 2_000];
  for (let i = 0; i < 2_600; i++) {
    let ident = `r${i}`;
    let title = i % 7 === 0 ? `multi\nline, "quoted"\nrow ${i}` : `row ${i}`;
    let views = String(i);
    if (withBad && badViews.includes(i)) views = 'many';
    if (withBad && noTitle.includes(i)) title = '';
    if (withBad && repeats.includes(i)) ident = `r${i - 3}`;
    if (withBad && [...badViews, ...noTitle, ...repeats].includes(i)) bad.push(line);
    const rec = [ident, cell(title), views].join(',');
    lines.push(rec);
    line += rec.split('\n').length;
  }
  return { csv: lines.join('\n') + '\n', bad: bad.sort((a, b) => a - b) };
}

describe('chunks cut short after a part', () => {
  it('a CSV import (abort) commits a part at a time through both passes, resumes from a part\'s checkpoint after a failed chunk, and ends exact', async () => {
    const tableId = await newTable();
    const { csv } = csvFile(false);
    const job = await importFile(tableId, csv, 'format=csv');
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    // The injected failure cost one attempt; the retry resumed where chunk 13 (one part) ended.
    expect(job.attempts).toBe(1);
    expect(job.result).toEqual({ inserted: 2_600, updated: 0, skippedCount: 0, skipped: [] });
    expect(job.progress).toEqual({ done: 2_600, total: 2_600 });
    const got = await liveRows(tableId);
    expect(got.size).toBe(2_600);
    for (let i = 0; i < 2_600; i++) {
      expect(got.get(`r${i}`), `r${i}`).toEqual({ title: i % 7 === 0 ? `multi\nline, "quoted"\nrow ${i}` : `row ${i}`, views: i });
    }
    // Every chunk was cut after each part. The validate pass; the write pass's first 500 rows in
    // two chunks, the failed third rolled back, then a new run's chunks from row 500.
    expect(await chunkRows(job.id)).toEqual([...PASS, ...cutPass(500), ...cutPass(2_100)]);
  });

  it('a CSV import (abort) with bad rows around the cuts names exactly those lines and writes nothing', async () => {
    const tableId = await newTable();
    const { csv, bad } = csvFile(true);
    const job = await importFile(tableId, csv, 'format=csv');
    expect(job.status).toBe('failed');
    expect(job.error.code).toBe('validation_failed');
    expect([...new Set(job.error.details.map((d: { line: number }) => d.line))]).toEqual(bad);
    expect((await liveRows(tableId)).size).toBe(0);
    expect(await chunkRows(job.id)).toEqual(PASS);
  });

  it('the same file under onError=skip writes exactly the good rows and names the bad ones', async () => {
    const tableId = await newTable();
    const { csv, bad } = csvFile(true);
    const job = await importFile(tableId, csv, 'format=csv&onError=skip');
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result.inserted).toBe(2_600 - bad.length);
    expect(job.result.skippedCount).toBe(bad.length);
    expect([...new Set(job.result.skipped.map((d: { line: number }) => d.line))]).toEqual(bad);
    const got = await liveRows(tableId);
    expect(got.size).toBe(2_600 - bad.length);
    // Each identifier once, with the row of its first good line.
    expect(got.get('r248')).toEqual({ title: 'row 248', views: 248 });
    expect(got.has('r0')).toBe(false);
    expect(got.has('r251')).toBe(false);
    expect(await chunkRows(job.id)).toEqual(PASS);
  });

  it('a mixed bulk write commits a part at a time and applies every operation once, in order', async () => {
    const tableId = await newTable();
    const operations = [
      ...Array.from({ length: 1_500 }, (_, k) => ({ op: 'insert', identifier: `b${k}`, data: { title: `new ${k}` } })),
      ...Array.from({ length: 600 }, (_, k) => ({ op: 'update', identifier: `b${k}`, data: { title: `changed ${k}`, views: k } })),
      ...Array.from({ length: 300 }, (_, k) => ({ op: 'delete', identifier: `b${1_000 + k}` })),
      // The same rows again, after the deletes: order decides what stays.
      ...Array.from({ length: 100 }, (_, k) => ({ op: 'update', identifier: `b${k}`, data: { title: `again ${k}` } })),
    ];
    const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect(res.statusCode, res.body).toBe(202);
    const job = await finished(res.json().id);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result).toEqual({ inserted: 1_500, updated: 700, deleted: 300 });
    const got = await liveRows(tableId);
    expect(got.size).toBe(1_200);
    expect(got.get('b5')).toEqual({ title: 'again 5' });
    expect(got.get('b150')).toEqual({ title: 'changed 150', views: 150 });
    expect(got.get('b900')).toEqual({ title: 'new 900' });
    expect(got.has('b1000')).toBe(false);
    expect(got.get('b1300')).toEqual({ title: 'new 1300' });
    expect(await chunkRows(job.id)).toEqual(cutPass(operations.length));
  });

  it('a publish commits an id range at a time and makes every row live once', async () => {
    const project = await createProject(api, token, 'published');
    const rev = await api.inject({ method: 'POST', url: `/v1/projects/${project}/revisions`, headers: bearer(token), payload: { data: { pages: 1 } } });
    expect(rev.statusCode, rev.body).toBe(201);
    const tableId = await createTable(api, token, project, [{ name: 'title', type: 'text', required: true }], 'live');
    const operations = Array.from({ length: 2_600 }, (_, k) => ({ op: 'insert', identifier: `p${k}`, data: { title: `draft ${k}` } }));
    const write = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect((await finished(write.json().id)).status).toBe('completed');

    const res = await api.inject({ method: 'POST', url: `/v1/projects/${project}/publishes`, headers: bearer(token), payload: {} });
    expect(res.statusCode, res.body).toBe(202);
    const job = await finished(res.json().id);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result).toMatchObject({ version: 1, publishedRows: 2_600 });
    expect(job.progress).toEqual({ done: 2_600, total: 2_600 });
    const r = await t.database.pool.query<{ live: number; same: number }>(
      `select count(*) filter (where data is not null)::int as live, count(*) filter (where data = draft_data)::int as same from cms_rows where table_id = $1`,
      [tableId],
    );
    expect(r.rows[0]).toEqual({ live: 2_600, same: 2_600 });
    // Batches of 1,000 rows in ranges of 250, each committed on its own; the last batch holds 600.
    expect(await chunkRows(job.id)).toEqual([...Array<number>(10).fill(250), 100]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { parse } from 'csv-parse/sync';
import { loadConfig } from '../../worker/src/config';
import { startWorker, type WorkerRuntime } from '../../worker/src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

/** Export → import round trips, and a failed import retried from its last chunk. */
let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime | undefined;
let token: string;
let projectId: string;

const FIELDS = [
  { name: 'title', type: 'text' },
  { name: 'price', type: 'number' },
  { name: 'live', type: 'boolean' },
  { name: 'at', type: 'datetime' },
  { name: 'meta', type: 'json' },
];

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  worker = await startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '50', WORKER_EXPORT_PAGE_ROWS: '50' }), pino({ level: 'silent' }));
  token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'rt' } })).json().token;
  projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

const table = async () =>
  (await api.inject({ method: 'POST', url: `/v1/projects/${projectId}/cms-tables`, headers: bearer(token), payload: { name: 't', fields: FIELDS } })).json()
    .id as string;

async function ended(id: string, timeoutMs = 60_000) {
  return waitFor(async () => {
    const j = (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();
    return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
  }, { timeoutMs, what: `job ${id}` });
}

async function allRows(tableId: string): Promise<Map<string, unknown>> {
  const out = new Map<string, unknown>();
  let cursor: string | null = null;
  do {
    const page: { rows: { identifier: string; draftData: unknown }[]; nextCursor: string | null } = (
      await api.inject({ method: 'GET', url: `/v1/cms-tables/${tableId}/rows?limit=500${cursor ? `&cursor=${cursor}` : ''}`, headers: bearer(token) })
    ).json();
    for (const r of page.rows) out.set(r.identifier, r.draftData);
    cursor = page.nextCursor;
  } while (cursor);
  return out;
}

/** Rows with every awkward value: formula starts, quotes, separators, newlines, unicode, negatives. */
function trickyOperations(n: number) {
  const starts = ['=SUM(A1)', '+1', '-2', '@cmd', '\tTab', '\rCR', 'plain', 'say "hi", ok', 'two\nlines', 'ünïcødé ✓', "'quoted"];
  return Array.from({ length: n }, (_, i) => {
    const data: Record<string, unknown> = { title: starts[i % starts.length] + ` #${i}` };
    if (i % 3 !== 0) data.price = i % 2 ? -i * 1.5 : i;
    if (i % 4 !== 0) data.live = i % 8 < 4;
    if (i % 5 !== 0) data.at = new Date(Date.UTC(2026, 0, 1 + (i % 28), 12)).toISOString();
    if (i % 6 !== 0) data.meta = { tags: ['a', 'b'], n: i, nested: { ok: i % 2 === 0 } };
    return { op: 'insert', identifier: i % 7 === 0 ? `=id${i}` : `row-${i}`, data };
  });
}

describe('export, then import into an empty table', () => {
  for (const format of ['csv', 'ndjson'] as const) {
    it(`reproduces the rows exactly through ${format}${format === 'csv' ? ', and no CSV cell starts with a formula character' : ''}`, async () => {
      const source = await table();
      const ops = trickyOperations(300);
      const bw = await api.inject({ method: 'POST', url: `/v1/cms-tables/${source}/bulk-writes`, headers: bearer(token), payload: { operations: ops } });
      expect((await ended(bw.json().id)).status).toBe('completed');

      const ex = await api.inject({ method: 'POST', url: `/v1/cms-tables/${source}/exports`, headers: bearer(token), payload: { format } });
      expect((await ended(ex.json().id)).status).toBe('completed');
      const file = await api.inject({ method: 'GET', url: `/v1/jobs/${ex.json().id}/download`, headers: bearer(token) });
      expect(file.statusCode).toBe(200);
      if (format === 'csv') {
        const cells: string[][] = parse(file.body, { bom: true, relaxColumnCount: false });
        // Numbers are never prefixed (shared/API.md): a negative number may start with '-'; nothing else may.
        for (const row of cells.slice(1)) {
          for (const cell of row) {
            if (/^[=+\-@\t\r]/.test(cell)) expect(cell, JSON.stringify(cell)).toMatch(/^-\d+(\.\d+)?$/);
          }
        }
      }

      const target = await table();
      const im = await api.inject({
        method: 'POST',
        url: `/v1/cms-tables/${target}/imports?format=${format}&mode=upsert`,
        headers: { ...bearer(token), 'content-type': format === 'csv' ? 'text/csv' : 'application/x-ndjson' },
        payload: file.rawPayload,
      });
      expect(im.statusCode, im.body).toBe(202);
      const imported = await ended(im.json().id);
      expect(imported.status, JSON.stringify(imported.error)).toBe('completed');

      const before = await allRows(source);
      const after = await allRows(target);
      expect(after.size).toBe(300);
      expect(Object.fromEntries(after)).toEqual(Object.fromEntries(before));
    }, 90_000);
  }
});

describe('a failed import, retried', () => {
  it('resumes from its last committed chunk and ends exact', async () => {
    const target = await table();
    const lines = Array.from({ length: 60_000 }, (_, i) => JSON.stringify({ identifier: `f${i}`, title: `t${i}`, price: i }));
    // A worker whose run-time limit fails the import part-way (a failure that keeps committed chunks).
    await worker!.close();
    worker = await startWorker(
      loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '200', WORKER_MAX_RUN_TIME_MS: '1500' }),
      pino({ level: 'silent' }),
    );
    const im = await api.inject({
      method: 'POST',
      url: `/v1/cms-tables/${target}/imports?format=ndjson&onError=skip`,
      headers: { ...bearer(token), 'content-type': 'application/x-ndjson' },
      payload: lines.join('\n') + '\n',
    });
    const failed = await ended(im.json().id);
    expect(failed.status).toBe('failed');
    expect(failed.error.code).toBe('timeout');
    const committed = await t.database.pool.query('select max(seq)::int as s from job_chunks where job_id = $1', [im.json().id]);
    const kept = await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1', [target]);
    expect(kept.rows[0].n).toBeGreaterThan(0);
    expect(kept.rows[0].n).toBeLessThan(60_000);

    await worker!.close();
    worker = await startWorker(loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '2000' }), pino({ level: 'silent' }));
    const retry = await api.inject({ method: 'POST', url: `/v1/jobs/${im.json().id}/retry`, headers: bearer(token) });
    expect(retry.statusCode, retry.body).toBe(202);
    const done = await ended(im.json().id);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    const rows = await t.database.pool.query('select count(*)::int as n, count(distinct identifier)::int as d from cms_rows where table_id = $1', [target]);
    expect(rows.rows[0]).toEqual({ n: 60_000, d: 60_000 });
    // Chunks committed before the failure were kept, not redone: the retry's chunks come after them.
    const chunks = await t.database.pool.query('select seq, lease from job_chunks where job_id = $1 order by seq', [im.json().id]);
    const firstRun = chunks.rows.filter((c) => c.lease === chunks.rows[0].lease);
    expect(firstRun.length).toBe(committed.rows[0].s);
    expect(new Set(chunks.rows.map((c) => c.seq)).size).toBe(chunks.rows.length);
  }, 120_000);
});

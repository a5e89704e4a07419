import { readdirSync } from 'node:fs';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { loadConfig } from '../../worker/src/config';
import { startWorker, type WorkerRuntime } from '../../worker/src/create-worker';
import { bearer, buildTestApi, claimCount, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';
import { count, createProject, createTable, createTeam, expectError, type Team } from './support';

/** `cms.import` end to end: the HTTP contract, an in-process worker, real Redis and PostgreSQL. */
let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime;
let team: Team;
let projectId: string;

const FIELDS = [
  { name: 'title', type: 'text', required: true },
  { name: 'views', type: 'number' },
  { name: 'live', type: 'boolean' },
  { name: 'meta', type: 'json' },
  { name: 'body', type: 'text' },
];

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  worker = await startWorker(
    loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '100', WORKER_QUEUES: 'cms-import' }),
    pino({ level: 'warn' }),
  );
  team = await createTeam(api, 'importers');
  projectId = await createProject(api, team.token);
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

const newTable = (name = 'posts') => createTable(api, team.token, projectId, FIELDS, `${name}-${Math.random().toString(36).slice(2, 8)}`);

interface ImportOptions {
  query?: string;
  contentType?: string;
  headers?: Record<string, string>;
  token?: string;
  app?: FastifyInstance;
}

function postImport(tableId: string, body: string | Buffer, o: ImportOptions = {}) {
  return (o.app ?? api).inject({
    method: 'POST',
    url: `/v1/cms-tables/${tableId}/imports${o.query ? `?${o.query}` : ''}`,
    headers: { ...bearer(o.token ?? team.token), 'content-type': o.contentType ?? 'text/csv', ...o.headers },
    payload: body,
  });
}

async function finished(jobId: string) {
  return waitFor(
    async () => {
      const j = (await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}`, headers: bearer(team.token) })).json();
      return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 25, what: `job ${jobId} to end` },
  );
}

async function importAndWait(tableId: string, body: string | Buffer, o: ImportOptions = {}) {
  const res = await postImport(tableId, body, o);
  expect(res.statusCode, res.body).toBe(202);
  expect(res.json()).toMatchObject({ type: 'cms.import', status: 'queued', progress: { done: 0, total: null } });
  return finished(res.json().id);
}

async function rows(tableId: string): Promise<Map<string, Record<string, unknown>>> {
  const r = await t.database.pool.query<{ identifier: string; draft_data: Record<string, unknown> }>(
    'select identifier, draft_data from cms_rows where table_id = $1 and deleted_at is null',
    [tableId],
  );
  return new Map(r.rows.map((x) => [x.identifier, x.draft_data]));
}

/** Every file under the blob dir (uploads in progress included). */
function blobFiles(): string[] {
  return readdirSync(t.blobDir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => d.name);
}

/** A CSV cell, quoted when it must be. */
const cell = (v: string) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);

/**
 * 1,000 CSV records, some spanning three lines, and ten bad ones: four non-numeric views, three
 * without the required title, three repeating an earlier row's identifier.
 */
function fileWithTenBadRows() {
  const lines = ['identifier,title,views'];
  let line = 2;
  const bad: number[] = [];
  for (let i = 0; i < 1_000; i++) {
    let ident = `r${i}`;
    let title = i % 37 === 0 ? `multi\nline, "quoted"\nrow ${i}` : `row ${i}`;
    let views = String(i);
    if ([13, 250, 251, 777].includes(i)) views = 'many';
    if ([100, 500, 999].includes(i)) title = '';
    if ([120, 640, 901].includes(i)) ident = `r${i - 100}`;
    if ([13, 250, 251, 777, 100, 500, 999, 120, 640, 901].includes(i)) bad.push(line);
    const rec = [ident, cell(title), views].join(',');
    lines.push(rec);
    line += rec.split('\n').length;
  }
  return { csv: lines.join('\n') + '\n', bad };
}

describe('CSV imports', () => {
  it('imports quoted commas, embedded newlines, a BOM, CRLF and a 1 MB field, converting cells by field type', async () => {
    const tableId = await newTable();
    const big = 'x'.repeat(1024 * 1024);
    const csv =
      '\ufeffid,identifier,title,views,live,meta,body\r\n' +
      `ignored,a,"Hello, world",42,true,"{""tags"":[""x"",""y""]}",\r\n` +
      `,b,"two\r\nlines, and ""quotes""",-1.5e2,FALSE,"[1,2]",'=SUM(A1)\r\n` +
      `,c,${big},,,,'-not a formula\r\n` +
      `,d,"'quoted, kept",0,,null,'plain`;
    const job = await importAndWait(tableId, csv, { query: 'format=csv' });
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result).toEqual({ inserted: 4, updated: 0, skippedCount: 0, skipped: [] });
    expect(job.progress).toEqual({ done: 4, total: 4 });
    const got = await rows(tableId);
    expect(got.get('a')).toEqual({ title: 'Hello, world', views: 42, live: true, meta: { tags: ['x', 'y'] } });
    expect(got.get('b')).toEqual({ title: 'two\r\nlines, and "quotes"', views: -150, live: false, meta: [1, 2], body: '=SUM(A1)' });
    expect(got.get('c')).toEqual({ title: big, body: '-not a formula' });
    expect(got.get('d')).toEqual({ title: "'quoted, kept", views: 0, meta: null, body: "'plain" });
    // The upload is not kept once the import completed.
    expect(blobFiles()).toEqual([]);
  });

  it('fails without writing anything under onError=abort, naming exactly the ten bad lines', async () => {
    const tableId = await newTable();
    const { csv, bad } = fileWithTenBadRows();
    const job = await importAndWait(tableId, csv);
    expect(job.status).toBe('failed');
    expect(job.error.code).toBe('validation_failed');
    expect(job.error.invalidCount).toBe(10);
    expect(job.error.details.map((d: { line: number }) => d.line)).toEqual(bad);
    for (const d of job.error.details) expect(d).toEqual({ line: expect.any(Number), field: expect.any(String), message: expect.any(String) });
    expect(job.error.details.filter((d: { field: string }) => d.field === 'views')).toHaveLength(4);
    expect(job.error.details.filter((d: { field: string }) => d.field === 'title')).toHaveLength(3);
    const repeats = job.error.details.filter((d: { field: string }) => d.field === 'identifier');
    expect(repeats).toHaveLength(3);
    expect(repeats[0].message).toMatch(/repeats the row on line \d+/);
    expect(await count(t.database, 'cms_rows where table_id = $1', [tableId])).toBe(0);
    expect(await claimCount(t.database, job.id)).toBeNull();
  });

  it('under onError=skip writes exactly the 990 good rows and names the ten skipped lines', async () => {
    const tableId = await newTable();
    const { csv, bad } = fileWithTenBadRows();
    const job = await importAndWait(tableId, csv, { query: 'onError=skip' });
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result.inserted).toBe(990);
    expect(job.result.updated).toBe(0);
    expect(job.result.skippedCount).toBe(10);
    expect(job.result.skipped.map((d: { line: number }) => d.line)).toEqual(bad);
    expect(job.progress).toEqual({ done: 1_000, total: 1_000 });
    const got = await rows(tableId);
    expect(got.size).toBe(990);
    // The first row of a repeated identifier is the one kept.
    expect(got.get('r20')).toEqual({ title: 'row 20', views: 20 });
    expect(got.get('r37')).toEqual({ title: 'multi\nline, "quoted"\nrow 37', views: 37 });
    expect(got.has('r13')).toBe(false);
    expect(await claimCount(t.database, job.id)).toBeNull();
  });

  it('refuses a header that names a column the table does not have', async () => {
    const tableId = await newTable();
    const job = await importAndWait(tableId, 'title,colour\nx,red\n');
    expect(job.status).toBe('failed');
    expect(job.error.details).toEqual([{ line: 1, field: 'colour', message: 'colour is not a field of this table' }]);
  });
});

describe('NDJSON imports, modes and identifiers', () => {
  it('imports NDJSON (gzip-encoded too), ignoring id and skipping blank lines', async () => {
    const tableId = await newTable();
    const ndjson = [
      JSON.stringify({ id: 'whatever', identifier: 'n1', title: 'One', views: 1, meta: { a: [1] } }),
      '',
      JSON.stringify({ title: 'No identifier', live: false }),
      JSON.stringify({ identifier: 'n3', title: 'Three' }),
    ].join('\n');
    const job = await importAndWait(tableId, gzipSync(ndjson), {
      query: 'format=ndjson',
      contentType: 'application/x-ndjson; charset=utf-8',
      headers: { 'content-encoding': 'gzip' },
    });
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result).toEqual({ inserted: 3, updated: 0, skippedCount: 0, skipped: [] });
    const got = await rows(tableId);
    expect(got.get('n1')).toEqual({ title: 'One', views: 1, meta: { a: [1] } });
    expect(got.get('n3')).toEqual({ title: 'Three' });
    expect([...got.values()]).toContainEqual({ title: 'No identifier', live: false });
  });

  it('names bad NDJSON lines by their line in the file', async () => {
    const tableId = await newTable();
    const ndjson = ['{"title":"ok"}', '', 'not json', '{"title":5}', '[1]', '{"identifier":"","title":"x"}'].join('\n');
    const job = await importAndWait(tableId, ndjson, { contentType: 'application/x-ndjson', query: 'onError=skip' });
    expect(job.status).toBe('completed');
    expect(job.result.inserted).toBe(1);
    expect(job.result.skippedCount).toBe(4);
    expect(job.result.skipped).toEqual([
      { line: 3, field: '', message: 'is not valid JSON' },
      { line: 4, field: 'title', message: 'title must be a string' },
      { line: 5, field: '', message: 'must be a JSON object keyed by field name' },
      { line: 6, field: 'identifier', message: 'identifier must not be empty' },
    ]);
  });

  it('upsert replaces drafts whole and the last row of an identifier wins, across chunks too', async () => {
    const tableId = await newTable();
    const first = await importAndWait(tableId, 'identifier,title,views\nu1,Old one,1\nu2,Old two,2\nu3,Old three,3\n');
    expect(first.status).toBe('completed');
    const lines = [
      JSON.stringify({ identifier: 'u1', title: 'u1 first' }),
      ...Array.from({ length: 250 }, (_, i) => JSON.stringify({ identifier: `new${i}`, title: `new ${i}` })),
      JSON.stringify({ identifier: 'u1', title: 'u1 last', live: true }), // chunk 3: wins over chunk 1
      JSON.stringify({ identifier: 'u2', title: 'u2 first' }),
      JSON.stringify({ identifier: 'u2', title: 'u2 last' }), // same chunk: wins
      JSON.stringify({ identifier: 'new7', title: 'new 7 again' }),
      JSON.stringify({ identifier: 'u3', views: 'bad' }), // invalid: skipped, u3 untouched
    ];
    const job = await importAndWait(tableId, lines.join('\n') + '\n', { contentType: 'application/x-ndjson', query: 'mode=upsert&onError=skip' });
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    // 250 new identifiers; u1 twice, u2 twice and new7 once replace a draft.
    expect(job.result).toMatchObject({ inserted: 250, updated: 5, skippedCount: 1 });
    const got = await rows(tableId);
    expect(got.size).toBe(253);
    expect(got.get('u1')).toEqual({ title: 'u1 last', live: true });
    expect(got.get('u2')).toEqual({ title: 'u2 last' });
    expect(got.get('u3')).toEqual({ title: 'Old three', views: 3 });
    expect(got.get('new7')).toEqual({ title: 'new 7 again' });
    expect(await count(t.database, 'cms_rows where table_id = $1 and deleted_at is null', [tableId])).toBe(253);
  });

  it('under mode=insert an identifier that already exists in the table is an invalid row', async () => {
    const tableId = await newTable();
    expect((await importAndWait(tableId, 'identifier,title\nkeep,Kept\n')).status).toBe('completed');
    const file = 'identifier,title\nfresh,Fresh\nkeep,Clobber\n';
    const aborted = await importAndWait(tableId, file);
    expect(aborted.status).toBe('failed');
    expect(aborted.error).toMatchObject({
      code: 'validation_failed',
      invalidCount: 1,
      details: [{ line: 3, field: 'identifier', message: 'identifier "keep" already exists in the table' }],
    });
    expect((await rows(tableId)).size).toBe(1);
    const skipped = await importAndWait(tableId, file, { query: 'onError=skip' });
    expect(skipped.result).toMatchObject({ inserted: 1, skippedCount: 1, skipped: [{ line: 3, field: 'identifier' }] });
    const got = await rows(tableId);
    expect(got.get('keep')).toEqual({ title: 'Kept' });
    expect(got.get('fresh')).toEqual({ title: 'Fresh' });
  });

  it('under onError=abort names every repeat of an identifier, chunks apart, by the line it repeats, in the same way as onError=skip', async () => {
    // 450 rows in chunks of 100: "twice" on lines 2 and 352, "thrice" on 5, 205 and 451, "keep" is
    // in the table already and on lines 10 and 300 (both "already exists", neither claims it).
    const tableId = await newTable();
    expect((await importAndWait(tableId, 'identifier,title\nkeep,Kept\n')).status).toBe('completed');
    const special: Record<number, string> = { 2: 'twice', 352: 'twice', 5: 'thrice', 205: 'thrice', 451: 'thrice', 10: 'keep', 300: 'keep' };
    const lines = ['identifier,title'];
    for (let line = 2; line <= 451; line++) lines.push(`${special[line] ?? `row${line}`},title ${line}`);
    const file = `${lines.join('\n')}\n`;
    const expected = [
      { line: 10, field: 'identifier', message: 'identifier "keep" already exists in the table' },
      { line: 205, field: 'identifier', message: 'identifier "thrice" repeats the row on line 5' },
      { line: 300, field: 'identifier', message: 'identifier "keep" already exists in the table' },
      { line: 352, field: 'identifier', message: 'identifier "twice" repeats the row on line 2' },
      { line: 451, field: 'identifier', message: 'identifier "thrice" repeats the row on line 5' },
    ];
    const aborted = await importAndWait(tableId, file);
    expect(aborted.status).toBe('failed');
    expect(aborted.error).toMatchObject({ code: 'validation_failed', invalidCount: 5, details: expected });
    expect((await rows(tableId)).size).toBe(1);
    expect(await claimCount(t.database, aborted.id)).toBeNull();
    // Retried, it fails the same way and still writes nothing (its claims table is gone: the
    // verdict is in its checkpoint).
    const retry = await api.inject({ method: 'POST', url: `/v1/jobs/${aborted.id}/retry`, headers: bearer(team.token) });
    expect(retry.statusCode, retry.body).toBe(202);
    const again = await finished(aborted.id);
    expect(again.status).toBe('failed');
    expect(again.error).toMatchObject({ code: 'validation_failed', invalidCount: 5, details: expected });
    expect((await rows(tableId)).size).toBe(1);

    const skipped = await importAndWait(tableId, file, { query: 'onError=skip' });
    expect(skipped.result).toMatchObject({ inserted: 445, skippedCount: 5, skipped: expected });
    expect((await rows(tableId)).get('thrice')).toEqual({ title: 'title 5' });
  });
});

describe('the import route', () => {
  it('answers 415 when ?format and Content-Type disagree, or the type is not CSV or NDJSON', async () => {
    const tableId = await newTable();
    expectError(await postImport(tableId, 'title\nx\n', { query: 'format=ndjson', contentType: 'text/csv' }), 415, 'unsupported_media_type');
    expectError(await postImport(tableId, '{"title":"x"}\n', { query: 'format=csv', contentType: 'application/x-ndjson' }), 415, 'unsupported_media_type');
    for (const type of ['application/json', 'text/plain', 'application/octet-stream']) {
      expectError(await postImport(tableId, '{"title":"x"}', { contentType: type }), 415, 'unsupported_media_type');
    }
    const none = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/imports`, headers: bearer(team.token) });
    expectError(none, 415, 'unsupported_media_type');
    expect(await count(t.database, 'jobs where payload->>$1 = $2', ['tableId', tableId])).toBe(0);
  });

  it('answers 413 past API_IMPORT_MAX_BYTES, counting decoded bytes, and leaves no blob behind', async () => {
    const small = await buildTestApi(t, { API_IMPORT_MAX_BYTES: '1000' });
    try {
      const tableId = await newTable();
      const before = blobFiles();
      const line = 'x'.repeat(64) + '\n';
      expectError(await postImport(tableId, 'title\n' + line.repeat(20), { app: small }), 413, 'payload_too_large');
      // Chunked (no Content-Length): the limit is found while streaming.
      const chunked = await small.inject({
        method: 'POST',
        url: `/v1/cms-tables/${tableId}/imports`,
        headers: { ...bearer(team.token), 'content-type': 'text/csv', 'transfer-encoding': 'chunked' },
        payload: Readable.from(Array.from({ length: 20 }, () => Buffer.from(line))),
      });
      expectError(chunked, 413, 'payload_too_large');
      // Under 1 kB of gzip that inflates to 200 kB.
      const bomb = gzipSync('title\n' + 'y'.repeat(200_000) + '\n');
      expect(bomb.length).toBeLessThan(1_000);
      expectError(await postImport(tableId, bomb, { app: small, headers: { 'content-encoding': 'gzip' } }), 413, 'payload_too_large');
      expect(blobFiles()).toEqual(before);
      expect(await count(t.database, 'jobs where payload->>$1 = $2', ['tableId', tableId])).toBe(0);
      // Under the limit the same API accepts.
      const ok = await postImport(tableId, 'title\nsmall\n', { app: small });
      expect(ok.statusCode, ok.body).toBe(202);
      expect((await finished(ok.json().id)).status).toBe('completed');
    } finally {
      await small.close();
    }
  });

  it("answers 404 for another team's table, an unknown table and a malformed id, storing nothing", async () => {
    const tableId = await newTable();
    const other = await createTeam(api, 'others');
    const before = blobFiles();
    for (const id of [tableId, '00000000-0000-4000-8000-000000000000', 'not-a-uuid']) {
      expectError(await postImport(id, 'title\nx\n', { token: other.token }), 404, 'not_found');
    }
    expectError(await postImport(tableId, 'title\nx\n', { token: 'nope' }), 401, 'unauthorized');
    expect(blobFiles()).toEqual(before);
    expect(await count(t.database, 'jobs where team_id = $1', [other.id])).toBe(0);
  });

  it('replays an Idempotency-Key with the same file (200, nothing stored) and refuses it with another file (409)', async () => {
    const tableId = await newTable();
    const before = blobFiles();
    const key = { 'idempotency-key': `imp-${Math.random()}` };
    const first = await postImport(tableId, 'identifier,title\ni1,One\n', { headers: key });
    expect(first.statusCode, first.body).toBe(202);
    const again = await postImport(tableId, 'identifier,title\ni1,One\n', { headers: key });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json().id).toBe(first.json().id);
    expectError(await postImport(tableId, 'identifier,title\ni1,Other\n', { headers: key }), 409, 'conflict');
    expectError(await postImport(tableId, 'identifier,title\ni1,One\n', { headers: key, query: 'mode=upsert' }), 409, 'conflict');
    expect(await count(t.database, 'jobs where payload->>$1 = $2', ['tableId', tableId])).toBe(1);
    expect((await finished(first.json().id)).status).toBe('completed');
    // The replays stored nothing, and the completed import dropped its upload.
    expect(blobFiles()).toEqual(before);
  });
});

describe('cancel and retry', () => {
  it('a cancelled import retried resumes at its last committed chunk and ends exact', async () => {
    const tableId = await newTable();
    const n = 20_000;
    const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ identifier: `k${i}`, title: `t${i}` }));
    // Repeats of early identifiers near the end: found only if the claims survive the cancel.
    lines.push(JSON.stringify({ identifier: 'k5', title: 'again' }), JSON.stringify({ identifier: 'k150', title: 'again' }));
    const res = await postImport(tableId, lines.join('\n'), { contentType: 'application/x-ndjson', query: 'onError=skip' });
    expect(res.statusCode).toBe(202);
    const id = res.json().id as string;
    await waitFor(
      async () => (await t.database.pool.query('select progress_done from jobs where id = $1', [id])).rows[0].progress_done >= 1_000,
      { intervalMs: 5, what: 'progress past 1,000' },
    );
    const cancel = await api.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: bearer(team.token) });
    expect(cancel.statusCode, cancel.body).toBe(202);
    const cancelled = await finished(id);
    expect(cancelled.status).toBe('cancelled');
    const doneAtCancel = cancelled.progress.done as number;
    expect(doneAtCancel).toBeGreaterThanOrEqual(1_000);
    expect(doneAtCancel).toBeLessThan(n);
    expect(await count(t.database, 'cms_rows where table_id = $1', [tableId])).toBe(doneAtCancel);

    const retry = await api.inject({ method: 'POST', url: `/v1/jobs/${id}/retry`, headers: bearer(team.token) });
    expect(retry.statusCode, retry.body).toBe(202);
    const done = await finished(id);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.result).toMatchObject({ inserted: n, updated: 0, skippedCount: 2 });
    expect(done.result.skipped.map((s: { line: number }) => s.line)).toEqual([n + 1, n + 2]);
    expect(done.progress).toEqual({ done: n + 2, total: n + 2 });
    const exact = await t.database.pool.query(
      'select count(*)::int as n, count(distinct identifier)::int as idents from cms_rows where table_id = $1',
      [tableId],
    );
    expect(exact.rows[0]).toEqual({ n, idents: n });
    // Chunks committed before the cancel were not redone: every chunk once, the first run's rows
    // being exactly what it had done, the retry (a later lease) doing only the rest.
    const chunks = await t.database.pool.query<{ seq: number; lease: number; rows: number }>(
      'select seq, lease, rows from job_chunks where job_id = $1 order by seq',
      [id],
    );
    expect(chunks.rows.map((c) => c.seq)).toEqual(chunks.rows.map((_, i) => i + 1));
    const firstLease = chunks.rows[0]!.lease;
    const byFirst = chunks.rows.filter((c) => c.lease === firstLease);
    expect(byFirst.reduce((s, c) => s + c.rows, 0)).toBe(doneAtCancel);
    expect(chunks.rows.filter((c) => c.lease > firstLease).reduce((s, c) => s + c.rows, 0)).toBe(n + 2 - doneAtCancel);
  });
});

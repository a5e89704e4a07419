import { mkdirSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertJob, uuidv7 } from '@platform/db';
import { exportPieces, FsBlobStore } from '@platform/jobs';
import type { FastifyInstance } from 'fastify';
import { parse } from 'csv-parse/sync';
import pino from 'pino';
import { loadConfig } from '../../worker/src/config';
import { startWorker, type WorkerRuntime } from '../../worker/src/create-worker';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let api: FastifyInstance;
let worker: WorkerRuntime | undefined;
let token: string;
let otherToken: string;
let tableId: string;

const fields = [
  { name: 'title', type: 'text', required: true },
  { name: 'views', type: 'number' },
  { name: 'meta', type: 'json' },
  { name: 'flag', type: 'boolean' },
  { name: 'when', type: 'datetime' },
];

/**
 * Each row as written, and the CSV line it must export as (after `<id>,`), by hand. PostgreSQL
 * formats the export: json cells are its JSON text (`{"a": [1, "x"]}`), numbers its numeric text
 * (1e21 is stored and exported as 1000000000000000000000).
 */
const cases: { identifier: string; data: Record<string, unknown>; csv: string }[] = [
  { identifier: 'eq', data: { title: '=1+2', views: -5, meta: { a: [1, 'x'] }, flag: true, when: '2024-01-02T03:04:05Z' }, csv: `eq,'=1+2,-5,"{""a"": [1, ""x""]}",true,2024-01-02T03:04:05Z` },
  { identifier: 'plus', data: { title: '+cmd', views: 0, flag: false }, csv: `plus,'+cmd,0,,false,` },
  { identifier: 'minus', data: { title: '-2+3', views: -1.5, meta: -3 }, csv: `minus,'-2+3,-1.5,-3,,` },
  { identifier: 'at', data: { title: '@SUM(A1)', meta: '=not a formula, JSON text' }, csv: `at,'@SUM(A1),,"""=not a formula, JSON text""",,` },
  { identifier: 'tab', data: { title: '\tx' }, csv: `tab,'\tx,,,,` },
  { identifier: 'cr', data: { title: '\rx' }, csv: `cr,"'\rx",,,,` },
  { identifier: '=ident', data: { title: 'an identifier is text too' }, csv: `'=ident,an identifier is text too,,,,` },
  { identifier: 'quotes', data: { title: 'He said "hi", then left', meta: ['a,b', null] }, csv: `quotes,"He said ""hi"", then left",,"[""a,b"", null]",,` },
  { identifier: 'lines', data: { title: 'line 1\nline 2\r\nline 3' }, csv: `lines,"line 1\nline 2\r\nline 3",,,,` },
  { identifier: 'unicode', data: { title: 'Ünïcødé — 日本語 🎉', meta: { 'ключ': 'значение' } }, csv: `unicode,Ünïcødé — 日本語 🎉,,"{""ключ"": ""значение""}",,` },
  { identifier: 'nulls', data: { title: 'nulls', views: null, meta: null, flag: null }, csv: `nulls,nulls,,,,` },
  { identifier: 'inner', data: { title: 'a=b', views: 1e21 }, csv: `inner,a=b,1000000000000000000000,,,` },
];
const HEADER = 'id,identifier,title,views,meta,flag,when\r\n';

async function jobOf(id: string, tok = token) {
  return (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(tok) })).json();
}

async function finished(id: string) {
  return waitFor(async () => {
    const j = await jobOf(id);
    return ['completed', 'failed', 'cancelled'].includes(j.status) ? j : undefined;
  }, { what: `job ${id} to end` });
}

async function exportOf(body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/exports`, headers: { ...bearer(token), ...headers }, payload: body });
  return res;
}

async function download(id: string, tok = token) {
  return api.inject({ method: 'GET', url: `/v1/jobs/${id}/download`, headers: bearer(tok) });
}

/** Row ids in id order, by identifier, as the database holds them. */
async function rowsInIdOrder(where = 'true'): Promise<{ id: string; identifier: string }[]> {
  const r = await t.database.pool.query(`select id, identifier from cms_rows where table_id = $1 and deleted_at is null and ${where} order by id`, [tableId]);
  return r.rows;
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  const admin = bearer(ADMIN_TOKEN);
  token = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: admin, payload: { name: 'exporters' } })).json().token;
  otherToken = (await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: admin, payload: { name: 'others' } })).json().token;
  const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'site' } });
  const table = await api.inject({ method: 'POST', url: `/v1/projects/${project.json().id}/cms-tables`, headers: bearer(token), payload: { name: 'posts', fields } });
  expect(table.statusCode).toBe(201);
  tableId = table.json().id;
});

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await t?.cleanup();
});

describe('CMS exports end to end', () => {
  it('queues an export (202 + Location); its download answers 409 until it completed', async () => {
    const res = await exportOf({ format: 'csv' });
    expect(res.statusCode).toBe(202);
    expect(res.headers.location).toBe(`/v1/jobs/${res.json().id}`);
    expect(res.json()).toMatchObject({ type: 'cms.export', status: 'queued', progress: { done: 0, total: null }, result: null });
    // No worker runs yet: the job stays queued.
    const early = await download(res.json().id);
    expect(early.statusCode).toBe(409);
    expect(early.json().error.code).toBe('conflict');

    // From here on a worker runs in-process, reading through a "replica" (the same database).
    worker = await startWorker(
      loadConfig({ ...t.env, WORKER_PORT: '0', WORKER_CHUNK_SIZE: '5', WORKER_EXPORT_PAGE_ROWS: '5', DATABASE_REPLICA_URL: t.databaseUrl }),
      pino({ level: 'warn' }),
    );
    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    // An empty table: the header alone.
    expect(job.result).toEqual({ blobKey: `exports/${job.id}.csv`, format: 'csv', rows: 0, bytes: Buffer.byteLength(HEADER) });
    expect((await download(job.id)).body).toBe(HEADER);
    const replica = await t.database.pool.query(`select count(*)::int as n from pg_stat_activity where application_name = 'worker-replica'`);
    expect(replica.rows[0].n).toBeGreaterThan(0);
  });

  it('exports CSV exactly: header, id order, RFC 4180 quoting, formula cells neutralised, numbers never', async () => {
    const operations = [
      ...cases.map((c) => ({ op: 'insert', identifier: c.identifier, data: c.data })),
      // Deleted rows are not exported.
      { op: 'insert', identifier: 'gone', data: { title: 'deleted' } },
      { op: 'delete', identifier: 'gone' },
    ];
    const write = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/bulk-writes`, headers: bearer(token), payload: { operations } });
    expect(write.statusCode).toBe(202);
    expect((await finished(write.json().id)).status).toBe('completed');

    const res = await exportOf({ format: 'csv', published: false });
    expect(res.statusCode).toBe(202);
    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    expect(job.progress).toEqual({ done: cases.length, total: cases.length });
    // Pages of 5 rows, read one after another into one checkpoint each half second: fewer chunks than pages.
    const chunks = await t.database.pool.query<{ n: number }>('select count(*)::int as n from job_chunks where job_id = $1 and rows > 0', [job.id]);
    expect(cases.length).toBeGreaterThan(10);
    expect(chunks.rows[0]!.n).toBeLessThan(Math.ceil(cases.length / 5));

    const byIdent = new Map(cases.map((c) => [c.identifier, c.csv]));
    const rows = await rowsInIdOrder();
    const expected = HEADER + rows.map((r) => `${r.id},${byIdent.get(r.identifier)}\r\n`).join('');
    const file = await download(job.id);
    expect(file.statusCode).toBe(200);
    expect(file.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(file.headers['content-disposition']).toBe(`attachment; filename="export-${job.id}.csv"`);
    expect(file.body).toBe(expected);
    // Read in two id ranges side by side (12 rows, pages of 5): the file may be kept in a piece per range.
    const { pieces, ...result } = job.result;
    expect(result).toEqual({ blobKey: `exports/${job.id}.csv`, format: 'csv', rows: cases.length, bytes: Buffer.byteLength(expected) });
    if (pieces) expect(pieces.reduce((a: number, b: number) => a + b, 0)).toBe(Buffer.byteLength(expected));
    expect(Number(file.headers['content-length'])).toBe(Buffer.byteLength(expected));

    // Read back as a spreadsheet would: no cell starts a formula unless prefixed; numbers stay numbers.
    const records: string[][] = parse(file.body);
    expect(records).toHaveLength(rows.length + 1);
    const numberColumn = 3;
    for (const rec of records.slice(1)) {
      rec.forEach((cell, col) => {
        if (col === numberColumn || /^-\d+(\.\d+)?$/.test(cell)) return;
        expect(cell, `cell ${JSON.stringify(cell)}`).not.toMatch(/^[=+\-@\t\r]/);
      });
    }
    const eq = records.find((r) => r[1] === 'eq')!;
    expect(eq.slice(2)).toEqual(["'=1+2", '-5', '{"a": [1, "x"]}', 'true', '2024-01-02T03:04:05Z']);
    expect(records.find((r) => r[1] === 'lines')![2]).toBe('line 1\nline 2\r\nline 3');
  });

  it('exports NDJSON: one object per row with the same keys, values as stored', async () => {
    const res = await exportOf({ format: 'ndjson' });
    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    const rows = await rowsInIdOrder();
    const byIdent = new Map(cases.map((c) => [c.identifier, c.data]));
    const file = await download(job.id);
    expect(file.statusCode).toBe(200);
    expect(file.headers['content-type']).toBe('application/x-ndjson');
    expect(file.headers['content-disposition']).toBe(`attachment; filename="export-${job.id}.ndjson"`);
    expect(file.body.endsWith('\n')).toBe(true);
    const lines = file.body.slice(0, -1).split('\n');
    expect(lines).toHaveLength(rows.length);
    lines.forEach((line, i) => {
      const r = rows[i]!;
      const d = byIdent.get(r.identifier)!;
      const object = JSON.parse(line);
      // Keys in the table's order, every field present (null when missing), values as stored.
      expect(Object.keys(object)).toEqual(['id', 'identifier', ...fields.map((f) => f.name)]);
      expect(object).toEqual({ id: r.id, identifier: r.identifier, ...Object.fromEntries(fields.map((f) => [f.name, d[f.name] ?? null])) });
    });
    expect(job.result).toMatchObject({ blobKey: `exports/${job.id}.ndjson`, format: 'ndjson', rows: rows.length });
  });

  it('published: true exports the live data of the rows that have it, and only those', async () => {
    await t.database.pool.query(
      `update cms_rows set data = jsonb_build_object('title', 'live ' || identifier, 'views', 7)
       where table_id = $1 and identifier in ('plus', 'unicode', 'gone')`,
      [tableId],
    );
    const res = await exportOf({ format: 'csv', published: true });
    const job = await finished(res.json().id);
    expect(job.status).toBe('completed');
    const live = await rowsInIdOrder('data is not null');
    expect(live.map((r) => r.identifier).sort()).toEqual(['plus', 'unicode']);
    const expected = HEADER + live.map((r) => `${r.id},${r.identifier},live ${r.identifier},7,,,\r\n`).join('');
    expect((await download(job.id)).body).toBe(expected);
    expect(job.progress).toEqual({ done: 2, total: 2 });
  });

  it('replays an Idempotency-Key with the first job (200) and refuses it for another body (409)', async () => {
    const key = { 'idempotency-key': 'export-once' };
    const first = await exportOf({ format: 'ndjson' }, key);
    expect(first.statusCode).toBe(202);
    const again = await exportOf({ format: 'ndjson', published: false }, key);
    expect(again.statusCode).toBe(200);
    expect(again.json().id).toBe(first.json().id);
    const other = await exportOf({ format: 'csv' }, key);
    expect(other.statusCode).toBe(409);
    await finished(first.json().id);
  });

  it('refuses a body that does not fit (400) and hides other teams\u2019 tables and exports (404)', async () => {
    for (const body of [{ format: 'xml' }, {}, { format: 'csv', published: 'yes' }, { format: 'csv', extra: 1 }]) {
      const res = await exportOf(body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().error.code).toBe('validation_failed');
    }
    const theirs = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/exports`, headers: bearer(otherToken), payload: { format: 'csv' } });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json().error.code).toBe('not_found');
    expect((await api.inject({ method: 'POST', url: '/v1/cms-tables/not-a-uuid/exports', headers: bearer(token), payload: { format: 'csv' } })).statusCode).toBe(404);

    const mine = await exportOf({ format: 'csv' });
    await finished(mine.json().id);
    const stolen = await download(mine.json().id, otherToken);
    expect(stolen.statusCode).toBe(404);
    expect(stolen.json().error.code).toBe('not_found');
    expect((await download(mine.json().id)).statusCode).toBe(200);
  });

  it('splits what is left of a range when another range ends early, so that both readers keep reading', async () => {
    const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'skewed' } });
    const table = await api.inject({ method: 'POST', url: `/v1/projects/${project.json().id}/cms-tables`, headers: bearer(token), payload: { name: 'skewed', fields: [{ name: 'n', type: 'number' }] } });
    const skewed = table.json().id as string;
    const team = (await t.database.pool.query('select team_id from cms_tables where id = $1', [skewed])).rows[0].team_id;
    // UUIDv7-shaped ids: 60 rows made within 60 ms, then 5 rows a year later. The ranges are cut at
    // the middle of the ids: the first holds 60 rows, the second 5, read in pages of 5.
    const id = (ms: string, g: string) =>
      `(substr(lpad(to_hex(${ms}), 12, '0'), 1, 8) || '-' || substr(lpad(to_hex(${ms}), 12, '0'), 9, 4) || '-7000-8000-' || lpad(to_hex(${g}), 12, '0'))::uuid`;
    await t.database.pool.query(
      `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
       select ${id('case when g <= 60 then 1700000000000 + g else 1731536000000 + g end', 'g')}, $1, $2, 's' || g, jsonb_build_object('n', g) from generate_series(1, 65) g`,
      [skewed, team],
    );
    const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${skewed}/exports`, headers: bearer(token), payload: { format: 'ndjson' } });
    const job = await finished(res.json().id);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    const lines = (await download(job.id)).body.trimEnd().split('\n').map((l: string) => JSON.parse(l) as { identifier: string; n: number });
    expect(lines.map((l: { n: number }) => l.n)).toEqual(Array.from({ length: 65 }, (_, i) => i + 1));
    // Two ranges at first; the second ended after its first page and the first was split (more than once).
    const cp = (await t.database.pool.query('select checkpoint from jobs where id = $1', [job.id])).rows[0].checkpoint;
    expect(cp.ranges.length).toBeGreaterThan(2);
    expect(cp.ranges.map((r: { rows: number }) => r.rows).reduce((a: number, b: number) => a + b, 0)).toBe(65);
    expect([...cp.ranges.map((r: { part: number }) => r.part)].sort((a, b) => a - b)).toEqual(cp.ranges.map((_: unknown, i: number) => i));
    expect(job.result.pieces).toHaveLength(cp.ranges.filter((r: { rows: number }) => r.rows > 0).length);
  });

  it('resumes an export whose checkpoint an older version wrote (one cursor, no ranges), from its committed bytes', async () => {
    // The whole file, as this version writes it, to compare with.
    const whole = await finished((await exportOf({ format: 'csv' })).json().id);
    expect(whole.status).toBe('completed');
    const file = (await download(whole.id)).rawPayload;
    const ids = (await rowsInIdOrder()).map((r) => r.id);
    expect(ids.length).toBeGreaterThan(6);
    // Five rows committed: the file up to the sixth row's record.
    const committed = file.indexOf(`\r\n${ids[5]},`) + 2;
    expect(committed).toBeGreaterThan(2);

    // A failed export as the version before ranges left it: its checkpoint is one cursor and one list
    // of segments, its part file holds the committed bytes and what it wrote past them before it failed.
    const teamId = (await t.database.pool.query<{ id: string }>(`select id from teams where name = 'exporters'`)).rows[0]!.id;
    const id = uuidv7();
    await insertJob(t.database.db, { id, teamId, type: 'cms.export', queue: 'cms-export', payload: { tableId, format: 'csv', published: false }, status: 'failed' });
    const legacy = { phase: 'pages', lastId: ids[4], bytes: committed, rows: 5, total: ids.length, segments: [{ lease: 1, bytes: committed }] };
    await t.database.pool.query(`update jobs set checkpoint = $2, lease = 1, chunk_seq = 1, finished_at = now(), error = '{"code":"internal","message":"crashed"}' where id = $1`, [id, legacy]);
    const blobs = new FsBlobStore(t.blobDir);
    await blobs.put(`exports/parts/${id}.1.part`, Buffer.concat([file.subarray(0, committed), Buffer.from('uncommitted bytes of the crashed run\r\n')]));

    const retry = await api.inject({ method: 'POST', url: `/v1/jobs/${id}/retry`, headers: bearer(token) });
    expect(retry.statusCode).toBe(202);
    const job = await finished(id);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    expect(job.result).toMatchObject({ rows: ids.length, bytes: file.length });
    expect((await download(id)).rawPayload.equals(file)).toBe(true);
    expect(await blobs.size(`exports/parts/${id}.1.part`)).toBeUndefined();
  });

  /** A completed export as the worker leaves it, its file in these pieces; its id. */
  async function completedExport(parts: Buffer[]): Promise<string> {
    const teamId = (await t.database.pool.query<{ id: string }>(`select id from teams where name = 'exporters'`)).rows[0]!.id;
    const id = uuidv7();
    const result = { blobKey: `exports/${id}.ndjson`, format: 'ndjson', rows: 0, bytes: parts.reduce((a, p) => a + p.length, 0), pieces: parts.map((b) => b.length) };
    const blobs = new FsBlobStore(t.blobDir);
    for (const [i, p] of exportPieces(result).entries()) await blobs.put(p.key, parts[i]!);
    await insertJob(t.database.db, { id, teamId, type: 'cms.export', queue: 'cms-export', payload: {}, status: 'completed' });
    await t.database.pool.query(`update jobs set result = $2 where id = $1`, [id, result]);
    return id;
  }

  /** Printable bytes that differ along the file (a piece sent twice or out of place shows). */
  const bytesOf = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => 32 + ((i * seed + (i >> 10)) % 90)));

  async function listening(): Promise<number> {
    if (!api.server.listening) await api.listen({ port: 0, host: '127.0.0.1' });
    return (api.server.address() as AddressInfo).port;
  }

  /** GETs a download over a real socket, pausing now and then (the socket fills, the API waits for it). */
  function slowDownload(port: number, id: string): Promise<{ status: number; length: string | undefined; body: Buffer }> {
    return new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: `/v1/jobs/${id}/download`, headers: bearer(token) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          if (chunks.length % 8 === 0) {
            res.pause();
            setTimeout(() => res.resume(), 5);
          }
        });
        res.on('end', () => resolve({ status: res.statusCode!, length: res.headers['content-length'], body: Buffer.concat(chunks) }));
        res.on('error', reject);
      }).on('error', reject);
    });
  }

  it('sends files of several pieces exactly over real sockets, two at once to slow readers', async () => {
    // Each piece larger than the API's 1 MiB read buffer, which is read into again once the socket took it.
    const files = [
      [bytesOf(2 * 2 ** 20 + 333, 7), bytesOf(2 ** 20 + 1, 13)],
      [bytesOf(3 * 2 ** 20 + 5, 11), bytesOf(17, 5), bytesOf(2 ** 20 - 1, 3)],
    ];
    const ids = await Promise.all(files.map((parts) => completedExport(parts)));
    const port = await listening();
    const got = await Promise.all(ids.map((id) => slowDownload(port, id)));
    for (const [i, parts] of files.entries()) {
      const whole = Buffer.concat(parts);
      expect(got[i]!.status).toBe(200);
      expect(got[i]!.length).toBe(String(whole.length));
      expect(got[i]!.body.equals(whole)).toBe(true);
    }
    const head = await api.inject({ method: 'HEAD', url: `/v1/jobs/${ids[0]}/download`, headers: bearer(token) });
    expect([head.statusCode, head.headers['content-length'], head.rawPayload.length]).toEqual([200, got[0]!.length, 0]);
  });

  it('answers 404 in the error shape when the file cannot be read before anything is sent', async () => {
    // A directory where the file should be, with the file's size recorded: the size check passes, reading fails.
    const id = await completedExport([Buffer.alloc(1)]);
    const key = path.join(t.blobDir, 'exports', `${id}.ndjson`);
    rmSync(key);
    mkdirSync(key);
    const size = statSync(key).size;
    await t.database.pool.query(`update jobs set result = result || jsonb_build_object('bytes', $2::int, 'pieces', jsonb_build_array($2::int)) where id = $1`, [id, size]);
    const res = await download(id);
    expect(res.statusCode).toBe(404);
    expect(res.json().error.code).toBe('not_found');
  });

  it('stops sending when the client leaves half-way: the file is closed, and the next download is whole', async () => {
    // 48 MiB: more than the socket's buffers on both sides hold, so the API is mid-file when the client leaves.
    const big = Buffer.alloc(48 * 2 ** 20).fill(bytesOf(4099, 3));
    const id = await completedExport([big]);
    const port = await listening();
    const openOnBlobs = () => readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(path.join(t.blobDir, 'exports'));
      } catch {
        return false;
      }
    }).length;
    const req = http.get({ host: '127.0.0.1', port, path: `/v1/jobs/${id}/download`, headers: bearer(token) });
    req.on('error', () => {}); // ours: destroyed below
    const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
    res.pause(); // reads nothing: the sockets fill and the API waits with its file open
    await waitFor(async () => openOnBlobs() === 1 || undefined, { what: 'the API to hold the file open' });
    await new Promise((r) => setTimeout(r, 200));
    expect(openOnBlobs()).toBe(1);
    req.destroy();
    await waitFor(async () => openOnBlobs() === 0 || undefined, { what: 'the API to close the file of the download left half-way' });
    const again = await download(id);
    expect(again.statusCode).toBe(200);
    expect(again.rawPayload.equals(big)).toBe(true);
  });

  it('exports a table of 200 fields, the most a table may have, in both formats', async () => {
    const wide = Array.from({ length: 200 }, (_, i) => ({ name: `f${i}`, type: i % 2 ? 'number' : 'text' }));
    const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'wide' } });
    const table = await api.inject({ method: 'POST', url: `/v1/projects/${project.json().id}/cms-tables`, headers: bearer(token), payload: { name: 'wide', fields: wide } });
    expect(table.statusCode, table.body).toBe(201);
    const data = Object.fromEntries(wide.map((f, i) => [f.name, i % 2 ? i : `v${i}`]));
    const write = await api.inject({
      method: 'POST',
      url: `/v1/cms-tables/${table.json().id}/bulk-writes`,
      headers: bearer(token),
      payload: { operations: [{ op: 'insert', identifier: 'w1', data }, { op: 'insert', identifier: 'w2', data: { f0: 'only one' } }] },
    });
    expect((await finished(write.json().id)).status).toBe('completed');
    for (const format of ['ndjson', 'csv'] as const) {
      const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${table.json().id}/exports`, headers: bearer(token), payload: { format } });
      const job = await finished(res.json().id);
      expect(job.status, JSON.stringify(job.error)).toBe('completed');
      const body = (await download(job.id)).body;
      if (format === 'ndjson') {
        // Lines come in id order; ids made in one millisecond are not ordered by identifier.
        const lines = body.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(lines).toHaveLength(2);
        const first = lines.find((l) => l.identifier === 'w1')!;
        const second = lines.find((l) => l.identifier === 'w2')!;
        expect(first).toMatchObject({ identifier: 'w1', ...data });
        expect(Object.keys(second)).toHaveLength(202);
        expect(second).toMatchObject({ identifier: 'w2', f0: 'only one', f1: null, f199: null });
      } else {
        const records = parse(body) as string[][];
        expect(records[0]).toEqual(['id', 'identifier', ...wide.map((f) => f.name)]);
        expect(records).toHaveLength(3);
        expect(records.find((r) => r[1] === 'w1')!.slice(1)).toEqual(['w1', ...wide.map((f) => String(data[f.name]))]);
      }
    }
  });
});

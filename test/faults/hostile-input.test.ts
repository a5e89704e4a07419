import { readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, waitFor, type TestEnv } from '../helpers';
import { figure } from './figures';
import { createTable, createWorkspace, Fleet, waitEnded, type ApiProcess, type Res, type Workspace, startApi } from './support';

/**
 * Hostile input over real sockets to the real API process (and, for files, the real worker): every
 * request gets a clear error in the one error shape, and writes nothing.
 */
let t: TestEnv;
let api: ApiProcess;
let ws: Workspace;
const IMPORT_MAX = 16 * 1024 * 1024;
const fleet = new Fleet(() => ({ ...t.env, WORKER_PORT: '0', LOG_LEVEL: 'info' }));

beforeAll(async () => {
  t = await createTestEnv();
  api = await startApi({ ...t.env, API_IMPORT_MAX_BYTES: String(IMPORT_MAX) });
  ws = await createWorkspace(api, 'hostile');
  fleet.start();
});

afterAll(async () => {
  await fleet.killAll();
  await api?.stop();
  await t?.cleanup();
});

/** What a refused request must not have changed: every table a request can write, and the blob store. */
async function world() {
  const r = await t.database.pool.query(`
    select (select count(*) from projects)::int as projects, (select count(*) from project_revisions)::int as revisions,
           (select count(*) from cms_tables)::int as tables, (select count(*) from cms_rows)::int as rows,
           (select count(*) from jobs where status in ('queued', 'active', 'completed'))::int as live_jobs,
           (select count(*) from idempotency_keys)::int as keys`);
  const blobs = readdirSync(t.blobDir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).length;
  return { ...r.rows[0], blobs };
}

/** `status code` of an answer, checking the one error shape on the way. */
function shape(res: Res): string {
  let code = '?';
  try {
    const body = res.json();
    if (Object.keys(body).join() === 'error' && typeof body.error.code === 'string' && body.error.message) code = body.error.code;
    else code = 'NOT-THE-ERROR-SHAPE';
  } catch {
    code = 'NOT-JSON';
  }
  return `${res.status} ${code}`;
}

/** Runs hostile requests, records each answer and whether anything was written, and asserts. */
/**
 * The answer to a request. When the server answers an oversized body early and closes, the TCP
 * reset it sends while the client is still writing can, on a loaded machine, discard the answer
 * before the client reads it (seen in CI: "closed without an answer"). That race is in TCP, not in
 * the API, so such a request is sent once more; any other failure, or a second one, stands.
 */
async function answerOf(r: () => Promise<Res>): Promise<Res> {
  try {
    return await r();
  } catch (err) {
    if (!/closed without an answer|ECONNRESET|EPIPE/.test(String(err))) throw err;
    return r();
  }
}

async function refused(test: string, expected: string, requests: (() => Promise<Res>)[]) {
  const before = await world();
  const answers: string[] = [];
  for (const r of requests) answers.push(shape(await answerOf(r)));
  const after = await world();
  const wrote = JSON.stringify(before) !== JSON.stringify(after);
  const held = figure(test, `${[...new Set(answers)].join(', ')}${wrote ? `; WROTE ${JSON.stringify(after)}` : '; nothing written'}`, `${expected}; nothing written`, answers.every((a) => a === expected) && !wrote);
  expect(answers.every((a) => a === expected), answers.join(' | ')).toBe(true);
  expect(after).toEqual(before);
  return held;
}

const post = (path: string, body: string | Buffer, headers: Record<string, string> = {}) =>
  api.call('POST', path, { token: ws.token, body, headers: { 'content-type': 'application/json', ...headers } });
const importFile = (body: string | Buffer, query = 'format=csv', headers: Record<string, string> = {}) =>
  api.call('POST', `/v1/cms-tables/${ws.tableId}/imports?${query}`, {
    token: ws.token,
    body,
    headers: { 'content-type': /ndjson/.test(query) ? 'application/x-ndjson' : 'text/csv', ...headers },
  });

/** An import the API accepts but whose file is bad: the job must fail naming the line, writing no row. */
async function badFile(test: string, body: string | Buffer, query: string, line: number) {
  const tableId = await createTable(api, ws.token, ws.projectId, undefined, `bad-${Math.random().toString(36).slice(2, 8)}`);
  const res = await api.call('POST', `/v1/cms-tables/${tableId}/imports?${query}`, {
    token: ws.token,
    body,
    headers: { 'content-type': /ndjson/.test(query) ? 'application/x-ndjson' : 'text/csv' },
  });
  expect(res.status, res.body).toBe(202);
  const job = await waitEnded(t.database, res.json().id, 120_000);
  const rows = (await t.database.pool.query('select count(*)::int as n from cms_rows where table_id = $1', [tableId])).rows[0].n;
  const details = (job.error as { details?: { line: number; message: string }[] } | null)?.details ?? [];
  const named = details.some((d) => d.line === line);
  const held = figure(
    test,
    `job ${job.status} (${job.error?.code ?? '-'}${details[0] ? `: line ${details[0].line} ${details[0].message.slice(0, 60)}` : ''}), ${rows} rows`,
    `job failed (validation_failed: line ${line} …), 0 rows`,
    job.status === 'failed' && job.error?.code === 'validation_failed' && named && rows === 0,
  );
  expect(held, JSON.stringify(job.error)).toBe(true);
}

describe('hostile input', () => {
  it('JSON bodies over the limit answer 413', async () => {
    const big = JSON.stringify({ name: 'x', pad: 'y'.repeat(2 * 1024 * 1024) });
    await refused('JSON body of 2 MiB (limit 1 MiB) on small routes', '413 payload_too_large', [
      () => post('/v1/projects', big),
      () => post(`/v1/projects/${ws.projectId}/revisions`, JSON.stringify({ data: { pad: 'z'.repeat(2 * 1024 * 1024) } })),
      () => post(`/v1/projects/${ws.projectId}/cms-tables`, big),
    ]);
  });

  it('compressed bodies whose decoded size is over the limit answer 413', async () => {
    const small = gzipSync(JSON.stringify({ name: 'x', pad: ' '.repeat(8 * 1024 * 1024) }));
    const bulk = gzipSync(JSON.stringify({ operations: [{ op: 'insert', data: { title: ' '.repeat(100 * 1024 * 1024) } }] }));
    expect(small.length).toBeLessThan(64 * 1024);
    await refused('gzip bodies that inflate past the limit (8 MiB into 1 MiB, 100 MiB into 64 MiB)', '413 payload_too_large', [
      () => post('/v1/projects', small, { 'content-encoding': 'gzip' }),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, bulk, { 'content-encoding': 'gzip' }),
    ]);
  });

  it('uploads over the maximum answer 413 (declared, chunked, and gzip-inflated), leaving no blob', async () => {
    const line = 'x'.repeat(1023) + '\n';
    const over = 'title\n' + line.repeat(IMPORT_MAX / 1024 + 64);
    await refused(`imports over API_IMPORT_MAX_BYTES (${IMPORT_MAX / 1024 / 1024} MiB)`, '413 payload_too_large', [
      () => importFile(over),
      () => importFile(over, 'format=csv', { 'transfer-encoding': 'chunked' }),
      () => importFile(gzipSync(over), 'format=csv', { 'content-encoding': 'gzip' }),
    ]);
  });

  it('unknown content types answer 415', async () => {
    const json = JSON.stringify({ name: 'x' });
    await refused('unknown or contradicting content types', '415 unsupported_media_type', [
      () => post('/v1/projects', json, { 'content-type': 'application/xml' }),
      () => post('/v1/projects', json, { 'content-type': 'multipart/form-data; boundary=x' }),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, 'a,b\n', { 'content-type': 'text/csv' }),
      () => importFile('{"title":"x"}\n', 'format=csv', { 'content-type': 'application/json' }),
      () => importFile('title\nx\n', 'format=ndjson', { 'content-type': 'text/csv' }),
      () => importFile('title\nx\n', 'format=csv', { 'content-type': 'application/octet-stream' }),
    ]);
  });

  it('invalid UTF-8 in a JSON body answers 400', async () => {
    const bad = Buffer.concat([Buffer.from('{"name":"caf'), Buffer.from([0xc3, 0x28, 0xff, 0xfe]), Buffer.from('"}')]);
    await refused('invalid UTF-8 in JSON bodies', '400 validation_failed', [
      () => post('/v1/projects', bad),
      () => post(`/v1/projects/${ws.projectId}/cms-tables`, Buffer.concat([Buffer.from('{"name":"t\xff'), Buffer.from([0xff]), Buffer.from('","fields":[]}')])),
    ]);
  });

  it('invalid UTF-8 in an import file fails the job naming the line, writing no row', async () => {
    const csv = Buffer.concat([Buffer.from('identifier,title\na,fine\nb,caf'), Buffer.from([0xe9]), Buffer.from('\nc,fine\n')]);
    await badFile('invalid UTF-8 in a CSV import (line 3)', csv, 'format=csv', 3);
    const nd = Buffer.concat([Buffer.from('{"title":"ok"}\n{"title":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}\n')]);
    await badFile('invalid UTF-8 in an NDJSON import (line 2)', nd, 'format=ndjson', 2);
  });

  it('unbalanced CSV quotes fail the job naming the line, writing no row', async () => {
    await badFile('unbalanced CSV quote (line 3)', 'identifier,title\na,fine\nb,"never closed\nc,more\n', 'format=csv', 3);
  });

  it('a 10 MB single field: refused on JSON routes; an import stores it whole or refuses it, never partly', async () => {
    const ten = 'x'.repeat(10 * 1024 * 1024);
    await refused('a 10 MB field in a JSON body', '413 payload_too_large', [() => post('/v1/projects', JSON.stringify({ name: ten }))]);
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'ten-mb');
    const res = await api.call('POST', `/v1/cms-tables/${tableId}/imports?format=csv`, {
      token: ws.token,
      body: `identifier,title\nbig,${ten}\nsmall,fine\n`,
      headers: { 'content-type': 'text/csv' },
    });
    expect(res.status, res.body).toBe(202);
    const job = await waitEnded(t.database, res.json().id, 120_000);
    const r = await t.database.pool.query(
      `select identifier, length(draft_data->>'title')::int as len from cms_rows where table_id = $1 order by identifier`,
      [tableId],
    );
    const whole = job.status === 'completed' && r.rows.length === 2 && r.rows[0].len === ten.length;
    const clearRefusal = job.status === 'failed' && job.error?.code === 'validation_failed' && r.rows.length === 0;
    const held = figure(
      'a 10 MB single CSV field in an import',
      `job ${job.status}${job.error ? ` (${job.error.code})` : ''}, ${r.rows.length} rows${r.rows[0] ? `, field of ${r.rows[0].len} chars` : ''}`,
      'completed with the field whole (10485760 chars), or failed (validation_failed) with 0 rows',
      whole || clearRefusal,
    );
    expect(held, JSON.stringify(job.error)).toBe(true);
  });

  it('deeply nested JSON answers 400 (bodies) or names the row (imports), writing nothing', async () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    await refused('deeply nested JSON bodies (5,000 and 100,000 levels)', '400 validation_failed', [
      () => post(`/v1/projects/${ws.projectId}/revisions`, `{"data":${deep(5_000)}}`),
      () => post(`/v1/projects/${ws.projectId}/revisions`, `{"data":${deep(100_000)}}`),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, `{"operations":[{"op":"insert","data":{"title":"x","meta":${deep(5_000)}}}]}`),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, `{"operations":[{"op":"insert","data":{"meta":${deep(100_000)}}}]}`),
    ]);
    await badFile('deeply nested JSON in an NDJSON import row (line 2, 100,000 levels)', `{"title":"ok"}\n{"title":"deep","meta":${deep(100_000)}}\n`, 'format=ndjson', 2);
    await badFile('deeply nested JSON in a CSV json cell (line 3, 5,000 levels)', `title,meta\nok,[1]\ndeep,${deep(5_000)}\n`, 'format=csv', 3);
  });

  it('path-like and oversized identifiers: 404 or 400 in the error shape, nothing read or written', async () => {
    const long = 'a'.repeat(10_000);
    const urls = [
      '/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd',
      '/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd/download',
      `/v1/jobs/${long}`,
      `/v1/cms-tables/${long}/rows`,
      '/v1/cms-tables/%00/rows',
      `/v1/cms-tables/${ws.tableId}/rows/..%2F..%2Fx`,
      `/v1/projects/..%2F${ws.projectId}/cms-tables`,
    ];
    await refused('path-like or oversized ids in URLs', '404 not_found', urls.map((u) => () => api.call(/cms-tables$/.test(u) ? 'POST' : 'GET', u, { token: ws.token, ...( /cms-tables$/.test(u) ? { json: { name: 'x', fields: [] } } : {}) })));
    await refused('oversized or control-character identifiers, Idempotency-Keys, bad percent-encoding', '400 validation_failed', [
      () => api.call('GET', '/v1/jobs/%E0%A4%A', { token: ws.token }),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, JSON.stringify({ operations: [{ op: 'insert', identifier: 'i'.repeat(300), data: { title: 'x' } }] })),
      () => post(`/v1/cms-tables/${ws.tableId}/bulk-writes`, JSON.stringify({ operations: [{ op: 'insert', identifier: '../\u0000etc', data: { title: 'x' } }] })),
      () => post(`/v1/cms-tables/${ws.tableId}/exports`, JSON.stringify({ format: 'csv' }), { 'idempotency-key': 'k'.repeat(300) }),
    ]);
    await badFile('an identifier of 1 MB in an import (line 1)', `{"identifier":"${'i'.repeat(1024 * 1024)}","title":"x"}\n`, 'format=ndjson', 1);
  });

  it('a job whose envelope would exceed 16 KB in Redis is refused before it is enqueued', async () => {
    // A publish carries its project's table ids: 450 tables make a 17 KB envelope.
    const team = await createWorkspace(api, 'many-tables');
    for (let i = 0; i < 450; i++) await createTable(api, team.token, team.projectId, [{ name: 'n', type: 'number' }], `t${i}`);
    const rev = await api.call('POST', `/v1/projects/${team.projectId}/revisions`, { token: team.token, json: { data: { page: 1 } } });
    expect(rev.status).toBe(201);
    const redis = new Redis(t.redisUrl);
    const keysBefore = (await redis.keys(`${t.env.QUEUE_PREFIX}:project-publish:*`)).length;
    const res = await api.call('POST', `/v1/projects/${team.projectId}/publishes`, { token: team.token, json: {} });
    const keysAfter = (await redis.keys(`${t.env.QUEUE_PREFIX}:project-publish:*`)).length;
    redis.disconnect();
    const left = await t.database.pool.query(`select status, error->>'code' as code from jobs where team_id = $1`, [team.teamId]);
    const held = figure(
      'a publish of 450 tables (envelope over MAX_ENVELOPE_BYTES = 16 KB)',
      `${shape(res)}, ${keysAfter - keysBefore} Redis keys added, history rows: ${left.rows.map((r) => `${r.status}/${r.code}`).join(', ') || 'none'}`,
      '400 validation_failed, 0 Redis keys added, no job left queued',
      res.status === 400 && keysAfter === keysBefore && left.rows.every((r) => r.status === 'failed'),
    );
    expect(held, res.body).toBe(true);
    await waitFor(async () => true);
  });
});

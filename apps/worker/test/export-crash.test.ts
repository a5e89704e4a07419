import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, bearer, buildTestApi, createTestEnv, waitFor, type TestEnv, workerProcesses } from '../../../test/helpers';

/**
 * An export read in two id ranges side by side, whose worker is SIGKILLed between writing a page of
 * each range to its part file and committing the checkpoint that names them: the next worker
 * resumes each range from its committed page, and the file holds every row exactly once, in id order.
 */
let t: TestEnv;
let api: FastifyInstance;
let token: string;
let tableId: string;
const ROWS = 30_000;
const PAGE = 5_000;

const workers = workerProcesses(() => ({
  ...t.env,
  WORKER_QUEUES: 'cms-export',
  WORKER_CHUNK_SIZE: String(PAGE),
  WORKER_EXPORT_PAGE_ROWS: String(PAGE),
  WORKER_EXPORT_CHUNK_MS: '1', // one page per chunk (a page takes longer): the kill lands between two pages
}));
const startWorker = workers.start;

async function jobState(id: string) {
  return (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  const team = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'exporter' } });
  token = team.json().token;
  const project = await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } });
  const table = await api.inject({
    method: 'POST',
    url: `/v1/projects/${project.json().id}/cms-tables`,
    headers: bearer(token),
    payload: { name: 'big', fields: [{ name: 'n', type: 'number' }, { name: 'title', type: 'text' }] },
  });
  tableId = table.json().id;
  // Straight into the table: a bulk write of 30,000 rows would take longer than the export itself.
  await t.database.pool.query(
    `insert into cms_rows (id, table_id, team_id, identifier, draft_data)
     select gen_random_uuid(), $1, $2, 'r' || g, jsonb_build_object('n', g, 'title', 'Row ' || g)
     from generate_series(1, $3::int) as g`,
    [tableId, team.json().id, ROWS],
  );
});

afterEach(() => workers.killAll());

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

describe('export resumes exactly after a crash', () => {
  it('a 30,000-row CSV export in two ranges whose worker is SIGKILLed mid-page ends with every row once, in id order', async () => {
    const res = await api.inject({ method: 'POST', url: `/v1/cms-tables/${tableId}/exports`, headers: bearer(token), payload: { format: 'csv' } });
    expect(res.statusCode).toBe(202);
    const jobId: string = res.json().id;

    // Chunk 1 records the row count and cuts the ids into two ranges; chunk 2 is page 1 of each
    // range, read side by side; the worker dies inside chunk 3 (page 2 of each), after writing the
    // pages to its part files and before committing the checkpoint.
    const w1 = startWorker({ CHUNK_FAULT: 'kill@3' });
    expect((await w1.exited).signal).toBe('SIGKILL');
    const killed = await jobState(jobId);
    expect(killed.status).toBe('active');
    expect(killed.progress).toEqual({ done: 2 * PAGE, total: ROWS });
    const cp = (await t.database.pool.query('select checkpoint from jobs where id = $1', [jobId])).rows[0].checkpoint;
    expect(cp.ranges).toHaveLength(2);
    expect(cp.ranges.map((r: { rows: number; segments: unknown[] }) => [r.rows, r.segments.length])).toEqual([[PAGE, 1], [PAGE, 1]]);
    const committed: number[] = cp.ranges.map((r: { segments: { lease: number; bytes: number }[] }) => r.segments[0]!.bytes);
    expect(cp.ranges.map((r: { segments: { lease: number }[] }) => r.segments[0]!.lease)).toEqual([1, 1]);
    expect(committed[0]! + committed[1]!).toBe(cp.bytes);
    // The uncommitted pages are in the part files, past the committed lengths: they must not survive.
    const parts = [`${jobId}.1.part`, `${jobId}.1.r1.part`].map((f) => path.join(t.blobDir, 'exports/parts', f));
    expect(statSync(parts[0]!).size).toBeGreaterThan(committed[0]!);
    expect(statSync(parts[1]!).size).toBeGreaterThan(committed[1]!);

    const w2 = startWorker();
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 30_000, what: 'the export to end' });
    expect(done.status).toBe('completed');
    expect(done.progress).toEqual({ done: ROWS, total: ROWS });
    expect(done.result).toMatchObject({ blobKey: `exports/${jobId}.csv`, format: 'csv', rows: ROWS });

    const file = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}/download`, headers: bearer(token) });
    expect(file.statusCode).toBe(200);
    expect(Buffer.byteLength(file.body)).toBe(done.result.bytes);
    const lines = file.body.split('\r\n');
    expect(lines.pop()).toBe('');
    expect(lines.shift()).toBe('id,identifier,n,title');
    expect(lines).toHaveLength(ROWS);
    const ids = lines.map((l) => l.split(',')[0]);
    expect(new Set(ids).size).toBe(ROWS);
    const expected = await t.database.pool.query(`select id, identifier, draft_data->>'n' as n from cms_rows where table_id = $1 order by id`, [tableId]);
    expect(ids).toEqual(expected.rows.map((r) => r.id));
    expect(lines).toEqual(expected.rows.map((r) => `${r.id},${r.identifier},${r.n},Row ${r.n}`));

    // Chunk 3 was committed by the second run; every chunk once (count, pages, end of pages).
    const chunks = await t.database.pool.query('select seq, lease from job_chunks where job_id = $1 order by seq', [jobId]);
    const n = chunks.rows.length;
    expect(n).toBeGreaterThanOrEqual(6);
    expect(chunks.rows.map((c) => c.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(chunks.rows.map((c) => c.lease)).toEqual([1, 1, ...Array.from({ length: n - 2 }, () => 2)]);
    // The part files are gone; the export is kept in four pieces (each range: a part of each run).
    const partsDir = path.join(t.blobDir, 'exports/parts');
    expect(existsSync(partsDir) ? readdirSync(partsDir) : []).toEqual([]);
    expect(done.result.pieces).toHaveLength(4);
    expect(done.result.pieces.reduce((a: number, b: number) => a + b, 0)).toBe(done.result.bytes);
    const pieces = readdirSync(path.join(t.blobDir, 'exports')).filter((f) => f.startsWith(jobId)).sort();
    expect(pieces).toEqual([`${jobId}.csv`, `${jobId}.csv.1`, `${jobId}.csv.2`, `${jobId}.csv.3`]);
    // A piece lost (a cleanup, another disk): the download says the file is gone, not a short file.
    rmSync(path.join(t.blobDir, 'exports', `${jobId}.csv.2`));
    const lost = await api.inject({ method: 'GET', url: `/v1/jobs/${jobId}/download`, headers: bearer(token) });
    expect(lost.statusCode).toBe(404);
    expect(lost.json().error.code).toBe('not_found');

    w2.kill('SIGTERM');
    expect((await w2.exited).code).toBe(0);
  }, 60_000);
});

import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, bearer, buildTestApi, claimCount, createTestEnv, waitFor, type TestEnv, workerProcesses, type AppProcess } from '../../../test/helpers';

/**
 * A 200,000-row import whose worker process is SIGKILLed twice, once in each pass, still ends with
 * exactly the file's rows: the checkpoint is a position in the file, committed with each chunk.
 */
let t: TestEnv;
let api: FastifyInstance;
let token: string;
let projectId: string;

const ROWS = 200_000;
const CHUNK = 5_000;

const workers = workerProcesses(() => ({
  ...t.env,
  WORKER_QUEUES: 'cms-import',
  WORKER_CHUNK_SIZE: String(CHUNK),
}));
const startWorker = workers.start;

/** Peak resident memory of a live process, in MiB (Linux). */
function peakRssMiB(w: AppProcess): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${w.child.pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  const team = await api.inject({ method: 'POST', url: '/v1/admin/teams', headers: bearer(ADMIN_TOKEN), payload: { name: 'crashy-imports' } });
  token = team.json().token;
  projectId = (await api.inject({ method: 'POST', url: '/v1/projects', headers: bearer(token), payload: { name: 'p' } })).json().id;
});

afterEach(() => workers.killAll());

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

async function jobState(id: string) {
  return (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) })).json();
}

describe('cms.import with the real worker process', () => {
  it('a 200,000-row NDJSON import SIGKILLed in its validate pass and again in its write pass ends exact', async () => {
    const table = await api.inject({
      method: 'POST',
      url: `/v1/projects/${projectId}/cms-tables`,
      headers: bearer(token),
      payload: { name: 'big', fields: [{ name: 'title', type: 'text', required: true }, { name: 'views', type: 'number' }] },
    });
    const tableId = table.json().id as string;
    const pad = 'p'.repeat(40);
    let file = '';
    for (let i = 0; i < ROWS; i++) file += `{"identifier":"row-${String(i).padStart(6, '0')}","title":"Row ${i} ${pad}","views":${i}}\n`;
    const res = await api.inject({
      method: 'POST',
      url: `/v1/cms-tables/${tableId}/imports?format=ndjson`,
      headers: { ...bearer(token), 'content-type': 'application/x-ndjson' },
      payload: file,
    });
    expect(res.statusCode, res.body).toBe(202);
    const jobId = res.json().id as string;
    const q = (sql: string) => t.database.pool.query(sql, [jobId]).then((r) => r.rows[0]);

    // Validate pass: 40 chunks of claims (and an empty one at the end of the file). The first
    // worker dies inside chunk 20, between its writes and its commit.
    const w1 = startWorker({ CHUNK_FAULT: 'kill@20' });
    expect((await w1.exited).signal).toBe('SIGKILL');
    expect(await jobState(jobId)).toMatchObject({ status: 'active', progress: { done: 0, total: null } });
    expect(await claimCount(t.database, jobId)).toBe(19 * CHUNK);
    expect(await q('select count(*)::int as n from cms_rows where $1::uuid is not null')).toEqual({ n: 0 });

    // The second worker resumes the validate pass at chunk 20, then writes; killed from outside mid-write.
    const w2 = startWorker();
    await waitFor(async () => (await jobState(jobId)).progress.done >= 100_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress past 100,000' });
    const w2Rss = peakRssMiB(w2);
    w2.kill('SIGKILL');
    await w2.exited;
    const afterSecond = await jobState(jobId);
    expect(afterSecond).toMatchObject({ status: 'active', progress: { total: ROWS } });
    expect(afterSecond.progress.done).toBeLessThan(ROWS);

    // The third worker finishes from the last committed chunk.
    const resumedAt = afterSecond.progress.done as number;
    const started = Date.now();
    const w3 = startWorker();
    const done = await waitFor(async () => {
      const j = await jobState(jobId);
      return j.status === 'completed' || j.status === 'failed' ? j : undefined;
    }, { timeoutMs: 60_000, intervalMs: 50, what: 'the job to end' });
    const seconds = (Date.now() - started) / 1000;
    const w3Rss = peakRssMiB(w3);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.result).toEqual({ inserted: ROWS, updated: 0, skippedCount: 0, skipped: [] });
    expect(done.progress).toEqual({ done: ROWS, total: ROWS });

    const rows = await t.database.pool.query(
      `select count(*)::int as n, count(distinct identifier)::int as idents,
              count(*) filter (where (draft_data->>'views')::int = substring(identifier from 5)::int)::int as matching
       from cms_rows where table_id = $1`,
      [tableId],
    );
    expect(rows.rows[0]).toEqual({ n: ROWS, idents: ROWS, matching: ROWS });
    // The claims table went with the job's end.
    expect(await claimCount(t.database, jobId)).toBeNull();

    // Every chunk committed once: 41 validate chunks, the switch to writing, 41 write chunks.
    const chunks = (await t.database.pool.query('select seq, lease, rows from job_chunks where job_id = $1 order by seq', [jobId])).rows;
    expect(chunks.map((c) => c.seq)).toEqual(Array.from({ length: 83 }, (_, i) => i + 1));
    expect(chunks.reduce((s, c) => s + c.rows, 0)).toBe(2 * ROWS);
    // Chunk 20, killed before its commit, was committed by the second run.
    expect(chunks[18].lease).toBe(chunks[0].lease);
    expect(chunks[19].lease).toBeGreaterThan(chunks[18].lease);
    expect(new Set(chunks.map((c) => c.lease)).size).toBeGreaterThanOrEqual(3);

    const rate = Math.round((ROWS - resumedAt) / seconds);
    console.log(
      `import-crash: third worker wrote ${ROWS - resumedAt} rows in ${seconds.toFixed(1)} s incl. start-up (${rate} rows/s); ` +
        `peak RSS: second worker ${w2Rss} MiB, third worker ${w3Rss} MiB`,
    );
  }, 120_000);
});

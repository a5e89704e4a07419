import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type TestEnv } from '../helpers';
import { figure } from './figures';
import {
  chunkFigures,
  closeFaultWorld,
  createTable,
  createWorkspace,
  Fleet,
  jobState,
  logLines,
  ndjsonFile,
  openFaultWorld,
  postImport,
  sleep,
  startTcpProxy,
  tableFigures,
  waitEnded,
  type ApiProcess,
  type Workspace,
} from './support';

/**
 * PostgreSQL faults on the shared server: a conflicting lock held for a minute, and a half-open
 * connection (a proxy that stops forwarding without closing). The job ends exact either way.
 */
let t: TestEnv;
let api: ApiProcess;
let ws: Workspace;
const fleet = new Fleet(() => ({
  ...t.env,
  WORKER_PORT: '0',
  WORKER_QUEUES: 'cms-import',
  WORKER_CHUNK_SIZE: '1000',
  WORKER_LOCK_DURATION_MS: '5000',
  WORKER_STALLED_INTERVAL_MS: '2000',
  LOG_LEVEL: 'info',
}));

beforeAll(async () => {
  ({ t, api } = await openFaultWorld());
  ws = await createWorkspace(api, 'postgres-faults');
});

afterEach(() => fleet.killAll());

afterAll(() => closeFaultWorld({ t, api }, fleet));

describe('PostgreSQL faults', () => {
  it('a conflicting lock held for 60 s: chunks fail with lock timeouts and retry; the job completes after, with no partial chunk', async () => {
    const ROWS = 60_000;
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'locked');
    const w = fleet.start();
    const id = await postImport(api, ws.token, tableId, ndjsonFile(ROWS, 'l-'), 'format=ndjson&onError=skip');
    await waitFor(async () => (await jobState(t.database, id)).done >= 5_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress' });
    // SHARE conflicts with the ROW EXCLUSIVE lock every insert takes, and not with reads.
    const holder = new pg.Client({ connectionString: t.databaseUrl });
    await holder.connect();
    let partial = -1;
    let held60: JobStateLite | undefined;
    try {
      await holder.query('begin');
      await holder.query('lock table cms_rows in share mode');
      const lockedAt = Date.now();
      const atLock = await jobState(t.database, id);
      await sleep(60_000 - (Date.now() - lockedAt));
      // No partial chunk: the rows in the table are exactly the committed chunks' rows.
      const during = await jobState(t.database, id);
      const rows = await holder.query('select count(*)::int as n from cms_rows where table_id = $1', [tableId]);
      partial = rows.rows[0].n - during.done;
      held60 = { status: during.status, done: during.done, attempts: during.attempts, movedWhileLocked: during.done - atLock.done };
    } finally {
      await holder.query('commit').catch(() => {});
      await holder.end();
    }
    const releasedAt = Date.now();
    const done = await waitEnded(t.database, id, 180_000);
    const afterMs = Date.now() - releasedAt;
    const rows = await tableFigures(t.database, tableId);
    const chunks = await chunkFigures(t.database, id);
    const lockTimeouts = logLines(w.output(), /lock timeout|55P03/).length;
    figure(
      'lock held 60 s: during the lock (status, rows moved, rows beyond committed chunks, lock-timeout log lines)',
      `${held60?.status}, ${held60?.movedWhileLocked} rows moved, ${partial} partial rows, ${lockTimeouts} lock-timeout lines`,
      'active, 0 rows moved, 0 partial rows, ≥ 1 lock-timeout line',
      held60?.status === 'active' && held60.movedWhileLocked === 0 && partial === 0 && lockTimeouts > 0,
    );
    const held = figure(
      'lock held 60 s: the job after the lock is released',
      `${done.status}${done.status !== 'completed' && done.error ? ` (${done.error.code}: ${done.error.message})` : ''} ${(afterMs / 1000).toFixed(1)} s after the release, ${rows.n} rows, ${rows.n - rows.idents} duplicates, chunks ${chunks.contiguous ? 'contiguous' : 'GAPS'}`,
      `completed, ${ROWS} rows, 0 duplicates, chunks contiguous`,
      done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS && chunks.contiguous && chunks.rows === ROWS,
    );
    expect(partial).toBe(0);
    expect(held, JSON.stringify(done)).toBe(true);
  }, 300_000);

  it('a half-open connection (the proxy stops forwarding, closes nothing) is detected within a minute; the job ends exact', async () => {
    const ROWS = 60_000;
    const u = new URL(t.databaseUrl);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
    try {
      const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'half-open');
      const w = fleet.start({ DATABASE_URL: proxy.through(t.databaseUrl) });
      const id = await postImport(api, ws.token, tableId, ndjsonFile(ROWS, 'h-'), 'format=ndjson&onError=skip');
      await waitFor(async () => (await jobState(t.database, id)).done >= 10_000, { timeoutMs: 60_000, intervalMs: 20, what: 'progress' });
      const frozen = proxy.freeze();
      const frozenAt = Date.now();
      const atFreeze = (await jobState(t.database, id)).done;
      let resumedMs: number | undefined;
      try {
        resumedMs = await waitFor(async () => {
          const j = await jobState(t.database, id);
          return j.done > atFreeze || j.status !== 'active' ? Date.now() - frozenAt : undefined;
        }, { timeoutMs: 120_000, intervalMs: 100, what: 'the worker to move on from the frozen connections' });
      } catch {
        // recorded below
      }
      const done = resumedMs === undefined ? await jobState(t.database, id) : await waitEnded(t.database, id, 180_000);
      const rows = await tableFigures(t.database, tableId);
      figure(
        `half-open connection (${frozen} frozen): time until the job moves again`,
        resumedMs === undefined ? 'never (over 120 s)' : `${(resumedMs / 1000).toFixed(1)} s`,
        '< 60 s',
        resumedMs !== undefined && resumedMs < 60_000,
      );
      const held = figure(
        'half-open connection: the job',
        `${done.status}${done.status !== 'completed' && done.error ? ` (${done.error.code})` : ''}, ${rows.n} rows, ${rows.n - rows.idents} duplicates`,
        `completed, ${ROWS} rows, 0 duplicates`,
        done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS,
      );
      expect(resumedMs).toBeLessThan(60_000);
      expect(held, w.output().slice(-3000)).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 400_000);
});

interface JobStateLite {
  status: string;
  done: number;
  attempts: number;
  movedWhileLocked: number;
}

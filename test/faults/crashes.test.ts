import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAST_TAKEOVER_ENV, waitFor, type AppProcess, type TestEnv } from '../helpers';
import { figure } from './figures';
import {
  chunkFigures,
  closeFaultWorld,
  createTable,
  createWorkspace,
  ENDED,
  Fleet,
  jobState,
  logLines,
  ndjsonFile,
  openFaultWorld,
  postImport,
  rng,
  sleep,
  tableFigures,
  waitEnded,
  type ApiProcess,
  type Workspace,
} from './support';

/**
 * Crashes: a worker process SIGKILLed anywhere (inside a commit, or from outside), stopped with
 * SIGTERM, or frozen past its lock, never loses or doubles a row of an import.
 */
let t: TestEnv;
let api: ApiProcess;
let ws: Workspace;
// Short locks, so a killed or frozen worker's job is taken over within seconds.
const fleet = new Fleet(() => ({ ...t.env, ...FAST_TAKEOVER_ENV, WORKER_QUEUES: 'cms-import' }));

beforeAll(async () => {
  ({ t, api } = await openFaultWorld());
  ws = await createWorkspace(api, 'crashes');
});

afterEach(() => fleet.killAll());

afterAll(() => closeFaultWorld({ t, api }, fleet));

const owner = (w: AppProcess) => new RegExp(`:${w.child.pid}$`);

describe('crashes', () => {
  it('a 200,000-row import SIGKILLed at 20 random points (8 inside a commit, 12 from outside) ends exact and completed', async () => {
    const ROWS = 200_000;
    const seed = Number(process.env.FAULT_SEED ?? Date.now() % 1_000_000_000);
    const rand = rng(seed);
    console.log(`crashes: kill schedule seed ${seed} (FAULT_SEED=${seed} replays it)`);
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'crash-200k');
    const jobId = await postImport(api, ws.token, tableId, ndjsonFile(ROWS));
    const env = { WORKER_CHUNK_SIZE: '4000' };

    const kinds = [...Array<'commit'>(8).fill('commit'), ...Array<'outside'>(12).fill('outside')];
    for (let i = kinds.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
    }
    const schedule: string[] = [];
    let commitKillsHeld = 0;
    for (const kind of kinds) {
      const at = (await jobState(t.database, jobId)).chunkSeq;
      // Each run commits at least one chunk before it dies: a run that makes progress is not a crash loop.
      if (kind === 'commit') {
        // 103 chunks in all (51 validate, the switch, 51 write): 20 kills of at most 4 chunks each fit.
        const n = at + 2 + Math.floor(rand() * 2);
        const w = fleet.start({ ...env, CHUNK_FAULT: `kill@${n}` });
        const exit = await Promise.race([w.exited, sleep(90_000).then(() => ({ signal: 'timeout' }))]);
        const after = (await jobState(t.database, jobId)).chunkSeq;
        // Killed between its writes and its commit: chunk n is not there.
        if (exit.signal === 'SIGKILL' && after === n - 1) commitKillsHeld++;
        schedule.push(`commit@${n}`);
      } else {
        const target = at + 1 + Math.floor(rand() * 2);
        const w = fleet.start(env);
        await waitFor(async () => {
          const j = await jobState(t.database, jobId);
          return j.chunkSeq >= target || ENDED.includes(j.status);
        }, {
          timeoutMs: 90_000,
          intervalMs: 10,
          what: `chunk ${target}`,
        });
        await sleep(Math.floor(rand() * 150));
        w.kill('SIGKILL');
        await w.exited;
        schedule.push(`outside@${target}+`);
      }
      if (ENDED.includes((await jobState(t.database, jobId)).status)) break;
    }
    console.log(`crashes: kills ${schedule.join(' ')}`);
    const midway = await jobState(t.database, jobId);

    fleet.start(env);
    const done = await waitEnded(t.database, jobId, 180_000);
    const rows = await tableFigures(t.database, tableId);
    const chunks = await chunkFigures(t.database, jobId);
    const killed = fleet.all.filter((w) => w.child.signalCode === 'SIGKILL').length;
    figure(
      '20 SIGKILLs during a 200,000-row import: kills (inside a commit / outside)',
      `${killed} (${commitKillsHeld} / ${schedule.filter((s) => s.startsWith('outside')).length})`,
      '20 (8 / 12)',
      killed === 20 && commitKillsHeld === 8 && midway.status === 'active',
    );
    const held = figure(
      '20 SIGKILLs during a 200,000-row import: job, rows, duplicates',
      `${done.status}${done.status !== 'completed' && done.error ? ` (${done.error.code}: ${done.error.message})` : ''}, ${rows.n} rows, ${rows.n - rows.idents} duplicates`,
      'completed, 200000 rows, 0 duplicates',
      done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS && rows.matching === ROWS,
    );
    figure(
      '20 SIGKILLs: chunks committed once each (rows of both passes)',
      `${chunks.contiguous ? 'contiguous' : 'GAPS'}, ${chunks.rows} rows, ${chunks.leases} leases`,
      'contiguous, 400000 rows',
      chunks.contiguous && chunks.rows === 2 * ROWS,
    );
    expect(held, JSON.stringify(done.error)).toBe(true);
    expect(killed).toBe(20);
    expect(commitKillsHeld).toBe(8);
    expect(done.result).toEqual({ inserted: ROWS, updated: 0, skippedCount: 0, skipped: [] });
    expect(chunks.contiguous).toBe(true);
    expect(chunks.rows).toBe(2 * ROWS);
  }, 600_000);

  it('SIGTERM with a 25 s grace: the chunk in hand commits, the job resumes on another worker, no "missing lock"', async () => {
    // 200,000 rows: with 100,000 the import could end (in ~2 s) before the signal was sent.
    const ROWS = 200_000;
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'sigterm');
    const jobId = await postImport(api, ws.token, tableId, ndjsonFile(ROWS), 'format=ndjson&onError=skip');
    // Large chunks, so the signal is likely to land while one is being written.
    const env = { WORKER_CHUNK_SIZE: '10000' };
    const first = fleet.start(env);
    await waitFor(async () => {
      const r = await t.database.pool.query('select lease_owner from jobs where id = $1', [jobId]);
      return owner(first).test(r.rows[0]?.lease_owner ?? '');
    }, { timeoutMs: 30_000, what: 'the first worker to claim the job' });
    const second = fleet.start(env);
    await waitFor(async () => second.output().includes('worker started'), { timeoutMs: 30_000, what: 'the second worker' });
    await waitFor(async () => (await jobState(t.database, jobId)).done >= 20_000, { timeoutMs: 60_000, intervalMs: 10, what: 'progress' });
    await sleep(Math.floor(Math.random() * 400));
    const atSignal = await jobState(t.database, jobId);
    const sentAt = Date.now();
    first.kill('SIGTERM');
    // The orchestrator's grace period: past it, SIGKILL.
    const grace = setTimeout(() => first.kill('SIGKILL'), 25_000);
    const exit = await first.exited;
    clearTimeout(grace);
    const exitSeconds = (Date.now() - sentAt) / 1000;
    const afterExit = await jobState(t.database, jobId);
    const done = await waitEnded(t.database, jobId, 120_000);
    const rows = await tableFigures(t.database, tableId);
    const chunks = await chunkFigures(t.database, jobId);
    const missingLock = logLines(fleet.output(), /missing lock/i);
    const finishedBySecond = owner(second).test(
      (await t.database.pool.query('select lease_owner from jobs where id = $1', [jobId])).rows[0]?.lease_owner ?? '',
    ) || second.output().includes('job completed');
    figure(
      'SIGTERM (25 s grace): exit of the signalled worker',
      `code ${exit.code} after ${exitSeconds.toFixed(1)} s, ${afterExit.chunkSeq - atSignal.chunkSeq} chunk(s) committed after the signal`,
      'code 0 within 25 s, 0 or 1 chunk',
      exit.code === 0 && exitSeconds < 25 && afterExit.chunkSeq - atSignal.chunkSeq <= 1,
    );
    const held = figure(
      'SIGTERM (25 s grace): job, rows, "missing lock" log lines',
      `${done.status} by the other worker: ${finishedBySecond}, ${rows.n} rows, ${rows.n - rows.idents} duplicates, ${missingLock.length} missing-lock lines`,
      `completed by the other worker, ${ROWS} rows, 0 duplicates, 0 lines`,
      done.status === 'completed' && finishedBySecond && rows.n === ROWS && rows.idents === ROWS && missingLock.length === 0 && chunks.contiguous,
    );
    expect(exit.code).toBe(0);
    expect(first.output()).toContain('run handed back at a chunk boundary');
    expect(missingLock).toEqual([]);
    expect(done.attempts).toBe(0);
    expect(held).toBe(true);
  }, 240_000);

  it('a worker frozen (SIGSTOP) past its lock commits zero chunks after SIGCONT and never marks the import done', async () => {
    const ROWS = 60_000;
    const tableId = await createTable(api, ws.token, ws.projectId, undefined, 'zombie');
    const jobId = await postImport(api, ws.token, tableId, ndjsonFile(ROWS, 'z-'), 'format=ndjson&onError=skip');
    const env = { WORKER_CHUNK_SIZE: '2000' };
    const zombie = fleet.start(env);
    await waitFor(async () => (await jobState(t.database, jobId)).done >= 10_000, { timeoutMs: 60_000, intervalMs: 10, what: 'progress' });
    zombie.child.kill('SIGSTOP');
    const frozen = await jobState(t.database, jobId);
    const staleLease = frozen.lease;
    const countOf = async (lease: number) =>
      (await t.database.pool.query('select count(*)::int as n from job_chunks where job_id = $1 and lease = $2', [jobId, lease])).rows[0].n as number;
    const staleChunks = await countOf(staleLease);

    // Another worker takes the job over once the frozen one's lock has expired, and gets going.
    const fresh = fleet.start(env);
    await waitFor(async () => {
      const j = await jobState(t.database, jobId);
      return j.lease > staleLease && (await countOf(j.lease)) >= 3;
    }, { timeoutMs: 90_000, what: 'the second worker to commit chunks' });
    // Wake the zombie mid-job: its next commit must be fenced out.
    zombie.child.kill('SIGCONT');
    await waitFor(async () => zombie.output().includes('stale run fenced out'), { timeoutMs: 60_000, what: 'the zombie to be fenced' });
    const done = await waitEnded(t.database, jobId, 120_000);
    const afterWake = await countOf(staleLease);
    const rows = await tableFigures(t.database, tableId);
    const zombieCompleted = logLines(zombie.output(), /job completed/).length;
    const held = figure(
      'zombie worker (SIGSTOP past its lock, then SIGCONT): chunks it committed after waking, "job completed" by it',
      `${afterWake - staleChunks} chunks, ${zombieCompleted} completions; job ${done.status}, ${rows.n} rows, ${rows.n - rows.idents} duplicates`,
      '0 chunks, 0 completions; job completed, 60000 rows, 0 duplicates',
      afterWake === staleChunks && zombieCompleted === 0 && done.status === 'completed' && rows.n === ROWS && rows.idents === ROWS,
    );
    expect(held).toBe(true);
    expect(fresh.output()).toContain('job completed');
  }, 240_000);
});

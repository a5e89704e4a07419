import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FAST_TAKEOVER_ENV, waitFor, type TestEnv } from '../helpers';
import { figure } from './figures';
import {
  closeFaultWorld,
  createTable,
  createWorkspace,
  ENDED,
  Fleet,
  jobState,
  ndjsonFile,
  openFaultWorld,
  postImport,
  sleep,
  tableFigures,
  waitEnded,
  type ApiProcess,
  type Workspace,
} from './support';

/**
 * Retry limits: a job that kills its process every time fails after its allowed stalls while its
 * neighbours complete; a transient failure is retried exactly `attempts` times; bad input runs once.
 */
let t: TestEnv;
let api: ApiProcess;
let poisonTeam: Workspace;
let neighbours: Workspace;
// Short locks, so a killed worker's job is taken over within seconds.
const fleet = new Fleet(() => ({ ...t.env, ...FAST_TAKEOVER_ENV }));

beforeAll(async () => {
  ({ t, api } = await openFaultWorld());
  poisonTeam = await createWorkspace(api, 'poison');
  neighbours = await createWorkspace(api, 'neighbours');
});

afterEach(() => fleet.killAll());

afterAll(() => closeFaultWorld({ t, api }, fleet));

describe('crash loops and retry limits', () => {
  it('a job that kills its process every time ends failed after its allowed stalls while 100 neighbouring jobs complete', async () => {
    const MAX_STALLED = 2;
    // The poison import validates (chunk 1), then its process dies in chunk 2, every time. The
    // neighbours are one-chunk imports in the same queue, so the fault never fires for them.
    const poison = await postImport(api, poisonTeam.token, poisonTeam.tableId, ndjsonFile(10, 'poison-'));
    const tables = [neighbours.tableId];
    for (let i = 1; i < 4; i++) tables.push(await createTable(api, neighbours.token, neighbours.projectId, undefined, `n${i}`));
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) {
      ids.push(await postImport(api, neighbours.token, tables[i % 4]!, ndjsonFile(5, `n${i}-`), 'format=ndjson&onError=skip'));
    }
    // One slot per process: what else a dying process holds is only prefetched, never started.
    const env = { WORKER_QUEUES: 'cms-import', WORKER_CONCURRENCY: '1', WORKER_MAX_STALLED_COUNT: String(MAX_STALLED), CHUNK_FAULT: 'kill@2' };
    let spawned = 0;
    await waitFor(async () => {
      const ended = await t.database.pool.query(
        `select count(*)::int as n from jobs where id = any($1::uuid[]) and status in ('completed', 'failed', 'cancelled')`,
        [[poison, ...ids]],
      );
      if (ended.rows[0].n === ids.length + 1) return true;
      if (fleet.alive().length === 0 && spawned < 20) {
        spawned++;
        fleet.start(env);
      }
      return false;
    }, { timeoutMs: 240_000, intervalMs: 200, what: 'the poison job and its neighbours to end' });
    const p = await jobState(t.database, poison);
    const n = await t.database.pool.query(`select status, count(*)::int as n from jobs where id = any($1::uuid[]) group by status`, [ids]);
    const completed = n.rows.find((r) => r.status === 'completed')?.n ?? 0;
    const killed = fleet.all.filter((w) => w.child.signalCode === 'SIGKILL').length;
    const poisonRows = await tableFigures(t.database, poisonTeam.tableId);
    // The first run commits the validation chunk (progress, not counted); then maxStalledCount + 1 stalls.
    const held = figure(
      `crash loop (maxStalledCount ${MAX_STALLED}): poison job, its runs, neighbours completed`,
      `${p.status} (${p.error?.code}) after ${p.lease} runs / ${killed} processes killed, ${poisonRows.n} rows; ${completed}/100 neighbours completed`,
      `failed (stalled) after ${MAX_STALLED + 2} runs, 0 rows; 100/100 completed`,
      p.status === 'failed' && p.error?.code === 'stalled' && p.lease === MAX_STALLED + 2 && poisonRows.n === 0 && completed === 100,
    );
    const unfinished = await t.database.pool.query(
      `select id, status, lease, dispatches, chunk_seq, error from jobs where id = any($1::uuid[]) and status <> 'completed'`,
      [ids],
    );
    expect(held, JSON.stringify({ p, statuses: n.rows, unfinished: unfinished.rows })).toBe(true);
  }, 300_000);

  it('attempts: a job whose every run fails transiently runs exactly `attempts` times (the definition: 5), then fails', async () => {
    const tableId = await createTable(api, poisonTeam.token, poisonTeam.projectId, undefined, 'always-transient');
    // Every insert into this table fails with serialization_failure (40001): transient, so retried.
    await t.database.pool.query(`
      create or replace function fault_serialization() returns trigger language plpgsql as $$
      begin raise exception 'injected serialization failure' using errcode = '40001'; end $$`);
    await t.database.pool.query(`
      create trigger fault_40001 before insert on cms_rows for each row
      when (new.table_id = '${tableId}'::uuid) execute function fault_serialization()`);
    try {
      fleet.start({ WORKER_QUEUES: 'cms-import' });
      const id = await postImport(api, poisonTeam.token, tableId, ndjsonFile(1_000, 'tr-'), 'format=ndjson&onError=skip');
      const done = await waitEnded(t.database, id, 120_000);
      await sleep(3_000); // a further run would show here
      const after = await jobState(t.database, id);
      const rows = await tableFigures(t.database, tableId);
      const held = figure(
        'attempts: every run fails transiently (40001 on every insert); cms.import attempts = 5',
        `${after.status} (${done.error?.code}) after ${after.lease} runs, attempts ${after.attempts}, ${rows.n} rows`,
        'failed (dependency_unavailable) after 5 runs, attempts 4, 0 rows',
        after.status === 'failed' && after.lease === 5 && after.attempts === 4 && rows.n === 0,
      );
      expect(held, JSON.stringify(after)).toBe(true);
    } finally {
      await t.database.pool.query('drop trigger if exists fault_40001 on cms_rows');
    }
  }, 180_000);

  it('bad input runs exactly once: an invalid import row and an invalid bulk operation', async () => {
    fleet.start({ WORKER_QUEUES: 'cms-import,cms-bulk-write' });
    const tableId = await createTable(api, poisonTeam.token, poisonTeam.projectId, undefined, 'bad-input');
    const file = ndjsonFile(500, 'bad-') + '{"identifier":"bad-x","title":42}\n';
    const importId = await postImport(api, poisonTeam.token, tableId, file);
    const bulk = await api.call('POST', `/v1/cms-tables/${tableId}/bulk-writes`, {
      token: poisonTeam.token,
      json: { operations: [{ op: 'insert', identifier: 'ok', data: { title: 'fine' } }, { op: 'update', identifier: 'missing', data: { title: 'x' } }] },
    });
    expect(bulk.status, bulk.body).toBe(202);
    const [imp, bw] = await Promise.all([waitEnded(t.database, importId, 60_000), waitEnded(t.database, bulk.json().id, 60_000)]);
    await sleep(3_000);
    const [imp2, bw2] = await Promise.all([jobState(t.database, importId), jobState(t.database, bulk.json().id)]);
    const rows = await tableFigures(t.database, tableId);
    const held = figure(
      'bad input: runs of an invalid import and of an invalid bulk write',
      `import ${imp2.status} (${imp.error?.code}) in ${imp2.lease} run(s); bulk write ${bw2.status} (${bw.error?.code}) in ${bw2.lease} run(s); ${rows.n} rows`,
      'both failed (validation_failed) in 1 run each, 0 rows',
      imp2.status === 'failed' && imp2.lease === 1 && imp2.attempts === 0 && imp.error?.code === 'validation_failed' &&
        bw2.status === 'failed' && bw2.lease === 1 && bw2.attempts === 0 && bw.error?.code === 'validation_failed' && rows.n === 0,
    );
    expect(held, JSON.stringify({ imp2, bw2 })).toBe(true);
    expect(ENDED).toContain(imp2.status);
  }, 120_000);
});

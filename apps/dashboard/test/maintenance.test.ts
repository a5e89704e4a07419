import { auditLog, claimsTable, createClaimsTable, createTeam, insertJob, jobChunks, jobEvents, queueSamples, recordJobEvent, startAudit, uuidv7 } from '@platform/db';
import { bulkWriteJob, exportJob } from '@platform/jobs';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config';
import { buildApp } from '../src/app';
import { OPERATOR, startTestDashboard, type TestDashboard } from './helpers';

/** The dashboard's background work: queue samples, their downsampling, and retention. */

let t: TestDashboard;
let teamId: string;
const DAY = 24 * 3600 * 1000;

beforeAll(async () => {
  t = await startTestDashboard();
  teamId = (await createTeam(t.database.db, 'sampled')).id;
});
afterAll(async () => {
  await t?.close();
});

async function samples(stepS?: number) {
  const rows = await t.database.db.select().from(queueSamples).where(stepS ? eq(queueSamples.stepS, stepS) : undefined);
  return rows.sort((a, b) => a.at.getTime() - b.at.getTime() || a.queue.localeCompare(b.queue));
}

describe('configuration', () => {
  it('keeps history 90 days, the audit log a year, samples 30 days (raw for 24 h), sampling every 10 s', () => {
    const c = loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y' });
    expect([c.HISTORY_RETENTION_DAYS, c.AUDIT_RETENTION_DAYS, c.QUEUE_SAMPLES_RETENTION_DAYS, c.QUEUE_SAMPLES_RAW_HOURS]).toEqual([90, 365, 30, 24]);
    expect([c.DASHBOARD_SAMPLE_INTERVAL_MS, c.DASHBOARD_PURGE_INTERVAL_MS]).toEqual([10_000, 600_000]);
    expect(() => loadConfig({ DATABASE_URL: 'postgres://x', REDIS_URL: 'redis://y', AUDIT_RETENTION_DAYS: '30' })).toThrow(/AUDIT_RETENTION_DAYS/);
  });
});

describe('the queue sampler', () => {
  it('runs on its own in a started dashboard, and stops with it', async () => {
    const app = await buildApp({
      db: t.database.db,
      redis: t.redis,
      queuePrefix: t.prefix,
      operator: OPERATOR,
      sessionSecret: 'z'.repeat(32),
      cookieSecure: 'auto',
      maintenance: { sampleIntervalMs: 1_000, purgeIntervalMs: 0 },
    });
    await app.ready();
    const count = async () => (await t.database.db.select({ n: sql<number>`count(*)::int` }).from(queueSamples).where(eq(queueSamples.stepS, 1)))[0]!.n;
    try {
      const deadline = Date.now() + 10_000;
      while ((await count()) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(await count()).toBeGreaterThan(0);
    } finally {
      await app.close();
    }
    const after = await count();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await count()).toBe(after);
  });


  it('records BullMQ depths per queue and the history’s completions and failures of the interval, once per interval', async () => {
    const queue = t.queue(bulkWriteJob.queue);
    await queue.add('x', {}, { jobId: 'a' });
    await queue.add('x', {}, { jobId: 'b' });
    await queue.add('x', {}, { jobId: 'c', delay: 60_000 });
    const now = new Date(Math.floor(Date.now() / 10_000) * 10_000 + 3_000);
    const at = new Date(Math.floor(now.getTime() / 10_000) * 10_000);
    const inInterval = new Date(at.getTime() - 4_000);
    for (const [status, finishedAt] of [['completed', inInterval], ['completed', inInterval], ['failed', inInterval], ['completed', new Date(at.getTime() - 15_000)]] as const) {
      await insertJob(t.database.db, { id: uuidv7(), teamId, type: bulkWriteJob.name, queue: bulkWriteJob.queue, status, payload: {}, finishedAt });
    }
    expect(await t.app.maintenance.sampleOnce(now)).toBeGreaterThan(0);
    // A second process sampling the same interval writes nothing.
    expect(await t.app.maintenance.sampleOnce(new Date(now.getTime() + 1_000))).toBe(0);
    const rows = await samples(10);
    const mine = rows.find((r) => r.queue === bulkWriteJob.queue)!;
    expect(mine).toMatchObject({ at, waiting: 2, delayed: 1, active: 0, completedCount: 2, failedCount: 1 });
    expect(rows.find((r) => r.queue === exportJob.queue)).toMatchObject({ waiting: 0, completedCount: 0 });
  });

  it('averages raw samples older than 24 h into 5-minute rows and drops samples older than 30 days', async () => {
    await t.database.db.delete(queueSamples);
    const now = new Date('2025-06-10T12:00:00Z');
    const base = Date.parse('2025-06-09T11:00:00Z'); // 25 h before now: 30 raw rows of the 5 minutes ending 11:05
    const rows = [];
    for (let i = 1; i <= 30; i++) rows.push({ queue: 'q', stepS: 10, at: new Date(base + i * 10_000), waiting: i, active: 1, delayed: 0, failed: 0, completedCount: 2, failedCount: 1 });
    rows.push({ queue: 'q', stepS: 10, at: new Date(now.getTime() - 3600_000), waiting: 7, active: 0, delayed: 0, failed: 0, completedCount: 0, failedCount: 0 });
    rows.push({ queue: 'q', stepS: 300, at: new Date(now.getTime() - 31 * DAY), waiting: 1, active: 0, delayed: 0, failed: 0, completedCount: 0, failedCount: 0 });
    await t.database.db.insert(queueSamples).values(rows);

    const report = await t.app.maintenance.purgeOnce(now);
    expect(report).toMatchObject({ downsampled: 1, samples: 1 });
    const folded = await samples(300);
    expect(folded).toHaveLength(1);
    expect(folded[0]).toMatchObject({ at: new Date('2025-06-09T11:05:00Z'), waiting: 15.5, active: 1, completedCount: 60, failedCount: 30 });
    // The recent raw row stays raw.
    expect((await samples(10)).map((r) => r.waiting)).toEqual([7]);
    // Nothing is folded twice.
    expect((await t.app.maintenance.purgeOnce(now)).downsampled).toBe(0);
  });
});

describe('retention', () => {
  it('purges ended jobs past 90 days with their chunks and events, keeps live or younger ones, and the audit log for a year', async () => {
    const now = new Date();
    const ago = (days: number) => new Date(now.getTime() - days * DAY);
    const make = (status: 'completed' | 'failed' | 'queued', createdDaysAgo: number, finishedDaysAgo?: number) =>
      insertJob(t.database.db, {
        id: uuidv7(),
        teamId,
        type: bulkWriteJob.name,
        queue: bulkWriteJob.queue,
        status,
        payload: {},
        createdAt: ago(createdDaysAgo),
        finishedAt: finishedDaysAgo === undefined ? null : ago(finishedDaysAgo),
      });
    const old = await make('completed', 100, 99);
    const oldFailed = await make('failed', 95, 91);
    const finishedRecently = await make('failed', 95, 10);
    const young = await make('completed', 80, 80);
    const stuck = await make('queued', 120);
    await t.database.db.insert(jobChunks).values({ jobId: old.id, seq: 1, lease: 1, rows: 10, durationMs: 5 });
    await recordJobEvent(t.database.db, { jobId: old.id, kind: 'completed' });
    // Claims tables a failed import kept for a retry: dropped with its job; a younger job's stays.
    for (const job of [oldFailed, finishedRecently]) {
      await createClaimsTable(t.database.db, job.id, { indexed: false });
      await t.database.pool.query(`insert into ${claimsTable(job.id)} (identifier, line) values ('a', 1), ('b', 2)`);
    }

    const entry = (at: Date) => startAudit(t.database.db, { actor: 'x', actorRole: 'operator', via: 'session', action: 'job.cancel', params: {}, jobIds: [old.id] }).then((r) =>
      t.database.db.update(auditLog).set({ at }).where(eq(auditLog.id, r.id)),
    );
    await entry(ago(400));
    await entry(ago(300));

    const report = await t.app.maintenance.purgeOnce(now);
    expect(report).toMatchObject({ jobs: 2, audit: 1, claimTables: 1 });
    const left = await t.database.pool.query<{ id: string }>('select id from jobs where id = any($1::uuid[])', [[old.id, oldFailed.id, finishedRecently.id, young.id, stuck.id]]);
    expect(left.rows.map((r) => r.id).sort()).toEqual([finishedRecently.id, young.id, stuck.id].sort());
    expect(await t.database.db.select().from(jobChunks).where(eq(jobChunks.jobId, old.id))).toEqual([]);
    expect(await t.database.db.select().from(jobEvents).where(eq(jobEvents.jobId, old.id))).toEqual([]);
    const exists = async (jobId: string) =>
      (await t.database.pool.query<{ t: string | null }>('select to_regclass($1)::text as t', [claimsTable(jobId)])).rows[0]!.t !== null;
    expect(await exists(oldFailed.id)).toBe(false);
    expect(await exists(finishedRecently.id)).toBe(true);
    const audit = await t.database.db.select({ n: sql<number>`count(*)::int` }).from(auditLog);
    expect(audit[0]!.n).toBe(1);
  });
});

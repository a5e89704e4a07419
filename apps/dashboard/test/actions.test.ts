import { createTeam, getJob, insertJob, listAuditLog, listJobEvents, uuidv7, type JobStatus } from '@platform/db';
import { bullJobId, bulkWriteJob, createRedis, exportJob, fairPriority, Producer } from '@platform/jobs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../../scripts/lib/services';
import { buildApp } from '../src/app';
import { runStaffCommand } from '../src/staff-cli';
import { basic, formPost, OPERATOR, signIn, startTestDashboard, type Session, type TestDashboard } from './helpers';

/** Operators' actions (cancel, retry, redrive), their audit trail, and everything that refuses them. */

let t: TestDashboard;
let producer: Producer;
let viewer: Session;
let operator: Session;
const VIEWER = { username: 'vic', password: 'viewer-password-1' };
const OLGA = { username: 'olga', password: 'operator-password-1' };
let teamA: string;
let teamB: string;

beforeAll(async () => {
  t = await startTestDashboard({ redriveMax: 3 });
  producer = new Producer(t.redis, t.prefix);
  const silent = { out: () => {}, err: () => {} };
  await runStaffCommand(t.database.db, { kind: 'add', role: 'viewer', ...VIEWER }, silent);
  await runStaffCommand(t.database.db, { kind: 'add', role: 'operator', ...OLGA }, silent);
  viewer = await signIn(t.app, VIEWER);
  operator = await signIn(t.app, OLGA);
  teamA = (await createTeam(t.database.db, 'alpha')).id;
  teamB = (await createTeam(t.database.db, 'beta')).id;
});
afterAll(async () => {
  await producer?.close();
  await t?.close();
});

let clock = Date.parse('2025-01-01T00:00:00Z');
async function job(status: JobStatus, opts: { team?: string; type?: typeof bulkWriteJob | typeof exportJob; dispatch?: boolean } = {}) {
  const def = opts.type ?? bulkWriteJob;
  const payload =
    def === bulkWriteJob
      ? { tableId: uuidv7(), blobKey: `bulk/${uuidv7()}.ndjson`, operationCount: 10 }
      : { tableId: uuidv7(), format: 'csv', published: false };
  const row = await insertJob(t.database.db, {
    id: uuidv7(),
    teamId: opts.team ?? teamA,
    type: def.name,
    queue: def.queue,
    status,
    payload,
    createdAt: new Date((clock += 1000)),
    ...(status === 'failed' ? { error: { code: 'internal', message: 'boom' }, finishedAt: new Date() } : {}),
    ...(status === 'active' ? { startedAt: new Date(), lease: 1 } : {}),
  });
  if (opts.dispatch) await producer.dispatch(row);
  return row;
}

async function auditCount() {
  return (await listAuditLog(t.database.db, { limit: 1000 })).length;
}

describe('who may act', () => {
  it('a viewer gets 403 on every action, by session (with its token) or HTTP Basic, and nothing changes', async () => {
    const failed = await job('failed');
    const queued = await job('queued', { dispatch: true });
    const before = await auditCount();
    const attempts = [
      formPost(viewer, `/jobs/${queued.id}/cancel`),
      formPost(viewer, `/jobs/${failed.id}/retry`),
      formPost(viewer, '/jobs/redrive', { type: bulkWriteJob.name }),
      { method: 'POST' as const, url: `/jobs/${queued.id}/cancel`, headers: { authorization: basic(VIEWER.username, VIEWER.password) } },
      { method: 'POST' as const, url: `/jobs/${failed.id}/retry`, headers: { authorization: basic(VIEWER.username, VIEWER.password) } },
    ];
    for (const a of attempts) {
      const res = await t.app.inject(a);
      expect(res.statusCode, a.url).toBe(403);
      expect(res.json()).toMatchObject({ error: { code: 'forbidden' } });
    }
    expect((await getJob(t.database.db, queued.id))!.status).toBe('queued');
    expect((await getJob(t.database.db, failed.id))!.status).toBe('failed');
    expect(await auditCount()).toBe(before);
    // And the pages they read show them no buttons.
    const page = await t.app.inject({ url: `/jobs/${queued.id}`, headers: { cookie: viewer.cookie, accept: 'text/html' } });
    expect(page.statusCode).toBe(200);
    expect(page.body).not.toContain('/cancel"');
  });

  it('an operator’s session must send its CSRF token; a cross-site post is refused before that', async () => {
    const queued = await job('queued');
    const noToken = await t.app.inject(formPost(operator, `/jobs/${queued.id}/cancel`, {}, null));
    expect(noToken.statusCode).toBe(403);
    expect(noToken.json().error.message).toMatch(/CSRF/);
    const wrong = await t.app.inject(formPost(operator, `/jobs/${queued.id}/cancel`, {}, viewer.csrf));
    expect(wrong.statusCode).toBe(403);
    const crossSite = formPost(operator, `/jobs/${queued.id}/cancel`);
    const res = await t.app.inject({ ...crossSite, headers: { ...crossSite.headers, origin: 'https://evil.example' } });
    expect(res.statusCode).toBe(403);
    expect((await getJob(t.database.db, queued.id))!.status).toBe('queued');
    // The page carries the token in its forms.
    const page = await t.app.inject({ url: `/jobs/${queued.id}`, headers: { cookie: operator.cookie, accept: 'text/html' } });
    expect(page.body).toContain(`<input type="hidden" name="_csrf" value="${operator.csrf}">`);
  });
});

describe('cancel', () => {
  it('ends a queued job at once, removes its BullMQ job, and audits who did it', async () => {
    const queued = await job('queued', { dispatch: true });
    const queue = t.queue(bulkWriteJob.queue);
    expect(await queue.getJob(bullJobId(queued.id, 0))).toBeDefined();
    const res = await t.app.inject(formPost(operator, `/jobs/${queued.id}/cancel`));
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toBe(`/jobs/${queued.id}?done=cancelled`);
    const after = (await getJob(t.database.db, queued.id))!;
    expect(after.status).toBe('cancelled');
    expect(after.cancelRequestedAt).not.toBeNull();
    expect(await queue.getJob(bullJobId(queued.id, 0))).toBeUndefined();
    const [entry] = await listAuditLog(t.database.db, { jobId: queued.id, limit: 5 });
    expect(entry).toMatchObject({ actor: 'olga', actorRole: 'operator', via: 'session', action: 'job.cancel', jobIds: [queued.id], outcome: { result: 'cancelled', statusBefore: 'queued' } });
    expect((await listJobEvents(t.database.db, queued.id)).map((e) => [e.kind, e.detail?.by])).toEqual([['cancelled', 'olga']]);
    const page = await t.app.inject({ url: res.headers.location as string, headers: { cookie: operator.cookie, accept: 'text/html' } });
    expect(page.body).toContain('Cancelled: the job was queued and ends now.');
    expect(page.body).toMatch(/<td>olga <span class="muted">\(operator, session\)<\/span><\/td><td>job\.cancel<\/td>/);
  });

  it('asks a running job to stop at its next chunk boundary; an ended job answers 409 (audited as refused)', async () => {
    const active = await job('active');
    const res = await t.app.inject({ method: 'POST', url: `/jobs/${active.id}/cancel`, headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ outcome: 'cancel_requested', job: { id: active.id, status: 'active', cancelRequested: true } });
    const done = await job('completed');
    const again = await t.app.inject(formPost(operator, `/jobs/${done.id}/cancel`));
    expect(again.statusCode).toBe(409);
    expect(again.body).toContain('the job already ended (completed)');
    const [entry] = await listAuditLog(t.database.db, { jobId: done.id, limit: 5 });
    expect(entry?.outcome).toMatchObject({ result: 'conflict' });
    const [byBasic] = await listAuditLog(t.database.db, { jobId: active.id, limit: 5 });
    expect(byBasic).toMatchObject({ actor: OPERATOR.username, via: 'basic', outcome: { result: 'cancel_requested' } });
  });
});

describe('retry', () => {
  it('queues a failed job again and hands it to BullMQ', async () => {
    const failed = await job('failed');
    const res = await t.app.inject(formPost(operator, `/jobs/${failed.id}/retry`));
    expect(res.statusCode).toBe(303);
    const after = (await getJob(t.database.db, failed.id))!;
    expect(after).toMatchObject({ status: 'queued', attempts: 1, error: null });
    expect(await t.queue(bulkWriteJob.queue).getJob(bullJobId(failed.id, after.dispatches))).toBeDefined();
    const [entry] = await listAuditLog(t.database.db, { jobId: failed.id, limit: 5 });
    expect(entry).toMatchObject({ action: 'job.retry', outcome: { result: 'requeued', statusBefore: 'failed' } });
    const conflict = await t.app.inject(formPost(operator, `/jobs/${failed.id}/retry`));
    expect(conflict.statusCode).toBe(409);
  });

  it('leaves the job failed, not looking queued, when Redis does not answer', async () => {
    const deadRedis = createRedis(`redis://127.0.0.1:${await freePort()}`, 'producer');
    deadRedis.on('error', () => {});
    const app = await buildApp({ db: t.database.db, redis: deadRedis, queuePrefix: t.prefix, operator: OPERATOR, sessionSecret: 'y'.repeat(32), cookieSecure: 'auto' });
    try {
      const failed = await job('failed');
      const res = await app.inject({ method: 'POST', url: `/jobs/${failed.id}/retry`, headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
      expect(res.statusCode).toBe(503);
      expect(res.headers['retry-after']).toBeDefined();
      expect((await getJob(t.database.db, failed.id))!).toMatchObject({ status: 'failed', error: { code: 'dependency_unavailable' } });
      const [entry] = await listAuditLog(t.database.db, { jobId: failed.id, limit: 5 });
      expect(entry?.outcome).toMatchObject({ result: 'dispatch_failed' });
    } finally {
      await app.close();
      deadRedis.disconnect();
    }
  });
});

describe('redrive', () => {
  it('requeues the failed jobs of a type and team, oldest first, at most the configured number per action', async () => {
    // A job of the same team already waiting in the queue: every redriven job is ranked behind it.
    await job('queued', { team: teamB });
    const mine = [];
    for (let i = 0; i < 4; i++) mine.push(await job('failed', { team: teamB }));
    const otherType = await job('failed', { team: teamB, type: exportJob });
    const otherTeam = await job('failed', { team: teamA });
    const res = await t.app.inject(formPost(operator, '/jobs/redrive', { team: 'beta', type: bulkWriteJob.name }));
    expect(res.statusCode).toBe(303);
    expect(res.headers.location).toMatch(/done=redriven&n=3/);
    const statuses = await Promise.all(mine.map(async (j) => (await getJob(t.database.db, j.id))!.status));
    // redriveMax is 3 in this file: the three oldest go, the newest waits for the next redrive.
    expect(statuses).toEqual(['queued', 'queued', 'queued', 'failed']);
    expect((await getJob(t.database.db, otherType.id))!.status).toBe('failed');
    expect((await getJob(t.database.db, otherTeam.id))!.status).toBe('failed');
    const [entry] = await listAuditLog(t.database.db, { jobId: mine[0]!.id, limit: 1 });
    expect(entry).toMatchObject({
      actor: 'olga',
      action: 'jobs.redrive',
      params: { type: bulkWriteJob.name, team: 'beta', teamIds: [teamB], limit: 3 },
      outcome: { result: 'requeued', matched: 3, requeued: 3, skipped: 0 },
    });
    expect([...entry!.jobIds].sort()).toEqual(mine.slice(0, 3).map((j) => j.id).sort());
    const requeued = await Promise.all(mine.slice(0, 3).map((j) => t.queue(bulkWriteJob.queue).getJob(bullJobId(j.id, 1))));
    for (const b of requeued) expect(b).toBeDefined();
    // Ranked in the team's line as the API ranks new jobs: behind the team's waiting job, so never
    // the first place (priority 1) an unranked dispatch gets. (Redrive lanes run side by side, so
    // two redriven jobs may share a rank.)
    for (const b of requeued) expect(b!.priority).toBeGreaterThanOrEqual(fairPriority(1, 'interactive'));

    // The audit page shows the action with its jobs.
    const audit = await t.app.inject({ url: '/audit?actor=olga', headers: { cookie: operator.cookie, accept: 'text/html' } });
    expect(audit.body).toContain('jobs.redrive');
    expect(audit.body).toContain(`href="/jobs/${mine[0]!.id}"`);
  });

  it('refuses a redrive of every failed job at once, or of an unknown team', async () => {
    const none = await t.app.inject({ method: 'POST', url: '/jobs/redrive', headers: { authorization: basic(OPERATOR.username, OPERATOR.password) } });
    expect(none.statusCode).toBe(400);
    const unknown = await t.app.inject({
      method: 'POST',
      url: '/jobs/redrive',
      headers: { authorization: basic(OPERATOR.username, OPERATOR.password), 'content-type': 'application/json' },
      payload: { team: 'no-such-team' },
    });
    expect(unknown.statusCode).toBe(404);
  });

  it('shows operators the redrive button for a failed-jobs filter, and viewers none', async () => {
    await job('failed', { team: teamB });
    const url = `/jobs?team=beta&status=failed&type=${bulkWriteJob.name}`;
    const op = await t.app.inject({ url, headers: { cookie: operator.cookie, accept: 'text/html' } });
    expect(op.body).toContain('action="/jobs/redrive"');
    expect(op.body).toMatch(/Redrive 2 failed jobs/);
    const view = await t.app.inject({ url, headers: { cookie: viewer.cookie, accept: 'text/html' } });
    expect(view.body).not.toContain('action="/jobs/redrive"');
  });
});

describe('without credentials', () => {
  it('every page and action of the dashboard answers 401 (or a redirect to sign in)', async () => {
    const id = uuidv7();
    for (const url of ['/jobs', `/jobs/${id}`, '/teams', '/charts', '/audit', '/api/jobs', `/api/jobs/${id}`, '/api/charts', '/api/audit', '/api/teams/backlog', '/assets/charts.js']) {
      const res = await t.app.inject({ url });
      expect(res.statusCode, url).toBe(401);
      const page = await t.app.inject({ url, headers: { accept: 'text/html' } });
      expect(page.statusCode, url).toBe(302);
    }
    for (const url of [`/jobs/${id}/cancel`, `/jobs/${id}/retry`, '/jobs/redrive']) {
      expect((await t.app.inject({ method: 'POST', url })).statusCode, url).toBe(401);
    }
  });
});

import { findTeamIds, UUID_RE, type Db } from '@platform/db';
import { JOB_NAMES } from '@platform/jobs';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ActionResult, StaffActions } from '../actions';
import { sendError } from '../errors';
import { jobIdFrom } from '../search';
import { html, page, sendPage } from '../ui/html';

/**
 * Operators' actions. auth.ts has already refused viewers (403), cross-site requests and, for
 * sessions, a missing or wrong CSRF token before a handler here runs. Browsers posting our forms
 * get a redirect back to the page (or a page saying why not); scripts get JSON.
 */

function fromBrowser(request: FastifyRequest): boolean {
  return (request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded') && (request.headers.accept ?? '').includes('text/html');
}

function refusalPage(reply: FastifyReply, request: FastifyRequest, status: number, title: string, message: string, back: string) {
  const body = html`<h1>${title}</h1><p class="notice bad" role="alert">${message}</p><p><a href="${back}">Back</a></p>`;
  return sendPage(reply, page(`${title} · Platform dashboard`, body, request.staff), status);
}

function answer(request: FastifyRequest, reply: FastifyReply, r: ActionResult, verb: string) {
  const back = r.kind === 'not_found' ? '/jobs' : `/jobs/${r.job.id}`;
  if (r.kind === 'not_found') {
    return fromBrowser(request) ? refusalPage(reply, request, 404, 'No such job', 'There is no job with this id.', back) : sendError(reply, 'not_found', 'no such job');
  }
  if (r.kind === 'conflict') {
    return fromBrowser(request)
      ? refusalPage(reply, request, 409, `Cannot ${verb}`, r.message, back)
      : reply.code(409).send({ error: { code: 'conflict', message: r.message }, auditId: r.auditId });
  }
  if (r.kind === 'unavailable') {
    reply.header('retry-after', '5');
    return fromBrowser(request)
      ? refusalPage(reply, request, 503, `Cannot ${verb}`, r.message, back)
      : reply.code(503).send({ error: { code: 'dependency_unavailable', message: r.message }, auditId: r.auditId });
  }
  if (fromBrowser(request)) return reply.redirect(`/jobs/${r.job.id}?done=${r.outcome}`, 303);
  return reply.code(202).send({ outcome: r.outcome, auditId: r.auditId, job: { id: r.job.id, status: r.job.status, cancelRequested: r.job.cancelRequestedAt !== null } });
}

export async function actionRoutes(app: FastifyInstance, opts: { db: Db; actions: StaffActions }): Promise<void> {
  const { actions } = opts;

  app.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (request, reply) => {
    const id = jobIdFrom(request.params.id);
    if (!id) return sendError(reply, 'not_found', 'no such job');
    return answer(request, reply, await actions.cancel(request.staff!, id), 'cancel');
  });

  app.post<{ Params: { id: string } }>('/jobs/:id/retry', async (request, reply) => {
    const id = jobIdFrom(request.params.id);
    if (!id) return sendError(reply, 'not_found', 'no such job');
    return answer(request, reply, await actions.retry(request.staff!, id), 'retry');
  });

  app.post('/jobs/redrive', async (request, reply) => {
    const body = (request.body && typeof request.body === 'object' ? request.body : {}) as Record<string, unknown>;
    const type = typeof body.type === 'string' && body.type ? body.type : undefined;
    const team = typeof body.team === 'string' && body.team.trim() ? body.team.trim() : undefined;
    const refuse = (status: 400 | 404, message: string) =>
      fromBrowser(request) ? refusalPage(reply, request, status, 'Cannot redrive', message, '/jobs?status=failed') : sendError(reply, status === 400 ? 'validation_failed' : 'not_found', message);
    if (!type && !team) return refuse(400, 'a redrive needs a job type or a team (or both): it never requeues every failed job at once');
    if (type && !(JOB_NAMES as string[]).includes(type)) return refuse(400, `unknown job type "${type}"`);
    let teamIds: string[] | undefined;
    if (team) {
      teamIds = await findTeamIds(opts.db, team, UUID_RE.test(team));
      if (teamIds.length === 0) return refuse(404, `no team has the id or name "${team}"`);
    }
    const r = await actions.redrive(request.staff!, { type, team, teamIds });
    if (r.dispatchFailed > 0) reply.header('retry-after', '5');
    if (fromBrowser(request)) {
      if (r.dispatchFailed > 0) {
        return refusalPage(reply, request, 503, 'Redrive stopped', `The job queue (Redis) stopped answering after ${r.requeued.length} jobs; the other ${r.notAttempted + r.dispatchFailed} stay failed.`, '/audit');
      }
      const q = new URLSearchParams({ status: 'failed', done: 'redriven', n: String(r.requeued.length) });
      if (team) q.set('team', team);
      if (type) q.set('type', type);
      return reply.redirect(`/jobs?${q}`, 303);
    }
    return reply.code(r.dispatchFailed > 0 ? 503 : 202).send({
      auditId: r.auditId,
      matched: r.matched,
      requeued: r.requeued.length,
      skipped: r.skipped,
      dispatchFailed: r.dispatchFailed,
      notAttempted: r.notAttempted,
      jobIds: r.requeued,
    });
  });
}

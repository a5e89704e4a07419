import { listAuditLog, UUID_RE, type AuditEntry, type Db } from '@platform/db';
import type { FastifyInstance } from 'fastify';
import { fmtTime, html, jsonSummary, page, sendPage } from '../ui/html';
import { PAGE_ASSETS } from './assets';

/** The audit log of staff actions: who did what, when, to which jobs, and how it ended. */

const PAGE_SIZE = 50;

function jobLinks(ids: string[]) {
  const shown = ids.slice(0, 5);
  return html`${shown.map((id) => html`<a href="/jobs/${id}"><code>${id.slice(0, 8)}…</code></a> `)}${ids.length > shown.length ? html`<span class="muted">+${ids.length - shown.length} more</span>` : ''}`;
}

export function auditTable(rows: AuditEntry[], opts: { compact?: boolean } = {}) {
  if (rows.length === 0) return html`<p class="muted">No staff actions recorded.</p>`;
  return html`<table id="audit">
<thead><tr><th>when</th><th>who</th><th>action</th><th>asked</th>${opts.compact ? '' : html`<th>jobs</th>`}<th>outcome</th></tr></thead>
<tbody>
${rows.map(
  (a) => html`<tr><td>${fmtTime(a.at)}</td><td>${a.actor} <span class="muted">(${a.actorRole}, ${a.via})</span></td><td>${a.action}</td><td class="wrap"><code>${jsonSummary(a.params, 200)}</code></td>${opts.compact ? '' : html`<td>${a.jobIds.length} ${jobLinks(a.jobIds)}</td>`}<td class="wrap">${a.outcome ? html`<code>${jsonSummary(a.outcome, 300)}</code>` : html`<span class="muted">no outcome recorded</span>`}</td></tr>
`,
)}</tbody>
</table>`;
}

export async function auditRoutes(app: FastifyInstance, opts: { db: Db }): Promise<void> {
  const read = async (query: Record<string, unknown>) => {
    const job = typeof query.job === 'string' && UUID_RE.test(query.job) ? query.job : undefined;
    const actor = typeof query.actor === 'string' && query.actor ? query.actor.slice(0, 200) : undefined;
    const before = typeof query.before === 'string' && /^\d{1,15}$/.test(query.before) ? Number(query.before) : undefined;
    const rows = await listAuditLog(opts.db, { jobId: job, actor, beforeId: before, limit: PAGE_SIZE + 1 });
    const entries = rows.slice(0, PAGE_SIZE);
    const next = rows.length > PAGE_SIZE ? entries[entries.length - 1]!.id : null;
    return { job, actor, before, entries, next };
  };

  app.get('/api/audit', async (request) => {
    const r = await read(request.query as Record<string, unknown>);
    return { entries: r.entries, nextCursor: r.next === null ? null : String(r.next) };
  });

  app.get('/audit', async (request, reply) => {
    const r = await read(request.query as Record<string, unknown>);
    const params = (before?: number) => {
      const u = new URLSearchParams();
      if (r.job) u.set('job', r.job);
      if (r.actor) u.set('actor', r.actor);
      if (before !== undefined) u.set('before', String(before));
      return u.toString() ? `?${u}` : '';
    };
    const body = html`<h1>Audit log</h1>
<form class="search" method="get" action="/audit">
  <label>Staff member<input name="actor" value="${r.actor ?? ''}"></label>
  <label>Job id<input name="job" value="${r.job ?? ''}" size="38"></label>
  <button type="submit">Filter</button> <a href="/audit">clear</a>
</form>
<p class="muted">Every action taken from this dashboard, newest first. Kept longer than the job history it names.</p>
${auditTable(r.entries)}
<div class="pager">${r.before !== undefined ? html`<a href="/audit${params()}">← Newest</a>` : ''}${r.next !== null ? html`<a href="/audit${params(r.next)}" rel="next">Older →</a>` : ''}</div>`;
    return sendPage(reply, page('Audit log · Platform dashboard', body, request.staff, { current: '/audit', ...PAGE_ASSETS }));
  });
}

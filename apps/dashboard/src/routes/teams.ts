import { teamBacklog, type Db, type TeamBacklogRow } from '@platform/db';
import type { FastifyInstance } from 'fastify';
import { fmtDuration, fmtTime, html, page, sendPage } from '../ui/html';
import { PAGE_ASSETS } from './assets';

/** Noisy neighbours: each team's backlog, running jobs and wait right now. */

export function backlogTable(rows: TeamBacklogRow[]) {
  if (rows.length === 0) return html`<p class="muted">No team has queued or running work right now.</p>`;
  return html`<table id="backlog">
<thead><tr><th>team</th><th>queued</th><th>running</th><th>oldest queued</th><th>waiting for</th><th>caps (running / queued)</th></tr></thead>
<tbody>
${rows.map(
  (t) => html`<tr><td><a href="/jobs?team=${t.teamId}" title="${t.teamId}">${t.teamName ?? t.teamId}</a></td><td class="num"><a href="/jobs?team=${t.teamId}&amp;status=queued">${t.queued}</a></td><td class="num"><a href="/jobs?team=${t.teamId}&amp;status=active">${t.active}</a></td><td>${fmtTime(t.oldestQueuedAt)}</td><td class="num">${t.waitSeconds === null ? '–' : fmtDuration(t.waitSeconds * 1000)}</td><td class="muted">${t.maxRunningJobs ?? 'default'} / ${t.maxQueuedJobs ?? 'default'}</td></tr>
`,
)}</tbody>
</table>`;
}

export async function teamRoutes(app: FastifyInstance, opts: { db: Db }): Promise<void> {
  app.get('/api/teams/backlog', async () => ({ teams: await teamBacklog(opts.db, 500) }));

  app.get('/teams', async (request, reply) => {
    const rows = await teamBacklog(opts.db, 200);
    const body = html`<h1>Teams right now</h1>
<p class="muted">Every team with queued or running jobs, the biggest backlog first. “Waiting for” is now minus the creation time of the team's oldest queued job.</p>
${backlogTable(rows)}`;
    return sendPage(reply, page('Teams · Platform dashboard', body, request.staff, { current: '/teams', ...PAGE_ASSETS }));
  });
}

import { listRecentJobsAllTeams, type Db, type StaffJobSummary } from '@platform/db';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { html, page, sendPage } from '../ui/html';

/** The overview: queue counts from Redis and the newest history rows from Postgres. Issue 5 grows it. */

export const HISTORY_ROWS = 50;
const COUNTED = ['waiting', 'active', 'delayed', 'failed', 'completed'] as const;

interface QueueSummary {
  name: string;
  paused: boolean;
  counts: Record<(typeof COUNTED)[number], number>;
}

async function summarise(queue: Queue): Promise<QueueSummary> {
  const [counts, paused] = await Promise.all([queue.getJobCounts(...COUNTED), queue.isPaused()]);
  return {
    name: queue.name,
    paused,
    counts: Object.fromEntries(COUNTED.map((s) => [s, counts[s] ?? 0])) as QueueSummary['counts'],
  };
}

function queuesTable(queues: QueueSummary[]) {
  return html`<table>
<thead><tr><th>queue</th>${COUNTED.map((s) => html`<th>${s}</th>`)}<th></th></tr></thead>
<tbody>
${queues.map(
  (q) => html`<tr><td><a href="/queues/queue/${encodeURIComponent(q.name)}">${q.name}</a></td>${COUNTED.map(
    (s) => html`<td class="num">${q.counts[s]}</td>`,
  )}<td>${q.paused ? 'paused' : ''}</td></tr>
`,
)}</tbody>
</table>`;
}

function progress(j: StaffJobSummary): string {
  return `${j.progressDone} / ${j.progressTotal ?? '?'}`;
}

function historyTable(rows: StaffJobSummary[]) {
  if (rows.length === 0) return html`<p>No jobs yet.</p>`;
  return html`<table>
<thead><tr><th>id</th><th>team</th><th>type</th><th>status</th><th>progress</th><th>created</th></tr></thead>
<tbody>
${rows.map(
  (j) => html`<tr><td><code>${j.id}</code></td><td title="${j.teamId}">${j.teamName ?? j.teamId}</td><td>${j.type}</td><td class="status-${j.status}">${j.status}</td><td class="num">${progress(j)}</td><td>${j.createdAt.toISOString()}</td></tr>
`,
)}</tbody>
</table>`;
}

export async function homeRoutes(app: FastifyInstance, opts: { db: Db; queues: Queue[] }): Promise<void> {
  app.get('/', async (request, reply) => {
    const [queues, jobs] = await Promise.all([
      Promise.all(opts.queues.map(summarise)),
      listRecentJobsAllTeams(opts.db, HISTORY_ROWS),
    ]);
    const body = html`<h1>Overview</h1>
<h2>Queues</h2>
${queuesTable(queues)}
<h2>Newest jobs</h2>
${historyTable(jobs)}`;
    return sendPage(reply, page('Overview · Platform dashboard', body, request.staff));
  });
}

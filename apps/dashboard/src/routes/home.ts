import { searchJobsAllTeams, teamBacklog, type Db } from '@platform/db';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { queueCharts } from '../chart-data';
import { html, jsonBlock, page, sendPage } from '../ui/html';
import { CHART_ASSETS } from './assets';
import { chartGrid } from './charts';
import { jobsTable } from './jobs';
import { backlogTable } from './teams';

/** The overview: queue counts now, the last hour's charts, the busiest teams and the newest jobs. */

export const HISTORY_ROWS = 25;
const COUNTED = ['waiting', 'active', 'delayed', 'failed', 'completed'] as const;

interface QueueSummary {
  name: string;
  paused: boolean;
  counts: Record<(typeof COUNTED)[number], number>;
}

async function summarise(queue: Queue): Promise<QueueSummary> {
  const [counts, paused] = await Promise.all([queue.getJobCounts(...COUNTED, 'prioritized', 'waiting-children'), queue.isPaused()]);
  const summary = Object.fromEntries(COUNTED.map((s) => [s, counts[s] ?? 0])) as QueueSummary['counts'];
  // Jobs with a priority wait in their own set; to staff they are waiting all the same.
  summary.waiting += (counts.prioritized ?? 0) + (counts['waiting-children'] ?? 0);
  return { name: queue.name, paused, counts: summary };
}

function queuesTable(queues: QueueSummary[]) {
  return html`<table id="queues">
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

export async function homeRoutes(app: FastifyInstance, opts: { db: Db; queues: Queue[] }): Promise<void> {
  app.get('/', async (request, reply) => {
    const [queues, jobs, busiest, charts] = await Promise.all([
      Promise.all(opts.queues.map(summarise)),
      searchJobsAllTeams(opts.db, { limit: HISTORY_ROWS }),
      teamBacklog(opts.db, 10),
      queueCharts(opts.db, { range: 'hour', queues: opts.queues.map((q) => q.name), idPrefix: 'overview', only: ['depth', 'throughput'] }),
    ]);
    const body = html`<h1>Overview</h1>
<form class="search" method="get" action="/jobs" role="search">
  <label>Find a job by id<input name="id" size="38" placeholder="uuid" autocomplete="off"></label>
  <label>or a team's jobs (id or exact name)<input name="team" size="30"></label>
  <button type="submit">Find</button>
</form>
<h2>Queues now</h2>
${queuesTable(queues)}
<h2>Last hour <a class="muted" href="/charts">(more charts)</a></h2>
${chartGrid(charts.charts)}
${jsonBlock('chart-data', charts.charts)}
<h2>Busiest teams now <a class="muted" href="/teams">(all)</a></h2>
${backlogTable(busiest)}
<h2>Newest jobs <a class="muted" href="/jobs">(search)</a></h2>
${jobsTable(jobs)}`;
    return sendPage(reply, page('Overview · Platform dashboard', body, request.staff, { current: '/', ...CHART_ASSETS }));
  });
}

import type { Db } from '@platform/db';
import type { FastifyInstance } from 'fastify';
import { queueCharts, RANGES, type RangeName } from '../chart-data';
import { html, jsonBlock, page, sendPage, SafeHtml } from '../ui/html';
import { CHART_ASSETS } from './assets';

/** Queues over time: depth per state and per queue, throughput and failure rate, for an hour, a day or a month. */

export function chartGrid(charts: Array<{ id: string; title: string }>) {
  return html`<div class="charts">${charts.map((c) => html`<div class="chart"><h3>${c.title}</h3><div id="${c.id}" class="chart-canvas"></div></div>`)}</div>`;
}

export async function chartRoutes(app: FastifyInstance, opts: { db: Db; queues: string[]; sampleIntervalMs: number }): Promise<void> {
  const read = (query: Record<string, unknown>) => {
    const range: RangeName = typeof query.range === 'string' && query.range in RANGES ? (query.range as RangeName) : 'hour';
    const queue = typeof query.queue === 'string' && opts.queues.includes(query.queue) ? query.queue : null;
    return { range, queue };
  };

  app.get('/api/charts', async (request) => {
    const { range, queue } = read(request.query as Record<string, unknown>);
    return queueCharts(opts.db, { range, queue, queues: opts.queues });
  });

  app.get('/charts', async (request, reply) => {
    const { range, queue } = read(request.query as Record<string, unknown>);
    const data = await queueCharts(opts.db, { range, queue, queues: opts.queues });
    const link = (r: RangeName, q: string | null) => `/charts?range=${r}${q ? `&queue=${encodeURIComponent(q)}` : ''}`;
    const current = (on: boolean) => (on ? new SafeHtml(' class="current"') : '');
    const body = html`<h1>Queues over time</h1>
<p class="tabs">${(Object.keys(RANGES) as RangeName[]).map((r) => html`<a href="${link(r, queue)}"${current(r === range)}>${RANGES[r].label}</a>`)}</p>
<p class="tabs">Queue: <a href="${link(range, null)}"${current(queue === null)}>all</a>${opts.queues.map((q) => html`<a href="${link(range, q)}"${current(queue === q)}>${q}</a>`)}</p>
${data.points === 0 ? html`<p class="notice bad">No samples in this range yet${opts.sampleIntervalMs > 0 ? `: the dashboard samples every ${Math.round(opts.sampleIntervalMs / 1000)} s` : ': the sampler is off in this process (DASHBOARD_SAMPLE_INTERVAL_MS=0)'}.</p>` : ''}
${chartGrid(data.charts)}
${jsonBlock('chart-data', data.charts)}
<p class="muted">Depths are BullMQ's counts sampled every ${RANGES.hour.stepS} s, averaged per ${RANGES[range].stepS >= 60 ? `${RANGES[range].stepS / 60} min` : `${RANGES[range].stepS} s`} here; throughput and failure rate come from the job history (jobs that ended completed or failed). Raw samples are kept a day, 5-minute averages 30 days.</p>`;
    return sendPage(reply, page('Charts · Platform dashboard', body, request.staff, { current: '/charts', ...CHART_ASSETS }));
  });
}

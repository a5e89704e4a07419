import {
  countFailedJobs,
  getJobForStaff,
  JOB_STATUSES,
  listAuditLog,
  listJobChunks,
  listJobEvents,
  summariseJobRuns,
  type Db,
  type StaffJobListRow,
} from '@platform/db';
import { JOB_NAMES } from '@platform/jobs';
import type { FastifyInstance } from 'fastify';
import type { StaffActions } from '../actions';
import { sendError } from '../errors';
import { jobIdFrom, runSearch, type SearchOutcome } from '../search';
import { actionButton, fmtDuration, fmtTime, html, jsonBlock, jsonSummary, page, sendPage, SafeHtml } from '../ui/html';
import { auditTable } from './audit';
import { CHART_ASSETS, PAGE_ASSETS } from './assets';

/** Job history: the search page, one job's page, and their JSON twins for scripts. */

export function progressText(done: number, total: number | null): string {
  const pct = total ? ` (${Math.floor((100 * done) / total)}%)` : '';
  return `${done} / ${total ?? '?'}${pct}`;
}

export function jobsTable(rows: StaffJobListRow[]) {
  if (rows.length === 0) return html`<p class="muted">No jobs match.</p>`;
  return html`<table id="jobs">
<thead><tr><th>id</th><th>team</th><th>type</th><th>status</th><th>progress</th><th>attempts</th><th>created</th><th>ended</th><th>error</th></tr></thead>
<tbody>
${rows.map(
  (j) => html`<tr><td><a href="/jobs/${j.id}"><code>${j.id}</code></a></td><td><a href="/jobs?team=${j.teamId}" title="${j.teamId}">${j.teamName ?? j.teamId}</a></td><td>${j.type}</td><td class="status-${j.status}">${j.status}</td><td class="num">${progressText(j.progressDone, j.progressTotal)}</td><td class="num">${j.attempts}</td><td>${fmtTime(j.createdAt)}</td><td>${fmtTime(j.finishedAt)}</td><td>${j.errorCode ?? ''}</td></tr>
`,
)}</tbody>
</table>`;
}

function qs(params: Record<string, string | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}

function searchForm(q: SearchOutcome['query']) {
  const option = (value: string, current: string, label = value) =>
    html`<option value="${value}"${value === current ? new SafeHtml(' selected') : ''}>${label}</option>`;
  return html`<form class="search" method="get" action="/jobs" role="search">
  <label>Job id<input name="id" value="${q.id}" size="38" placeholder="uuid" autocomplete="off"></label>
  <label>Team (id or exact name)<input name="team" value="${q.team}" size="30"></label>
  <label>Type<select name="type">${option('', q.type, 'any')}${JOB_NAMES.map((t) => option(t, q.type))}</select></label>
  <label>Status<select name="status">${option('', q.status, 'any')}${JOB_STATUSES.map((s) => option(s, q.status))}</select></label>
  <label>Created from (UTC)<input type="datetime-local" name="from" value="${q.from}"></label>
  <label>to<input type="datetime-local" name="to" value="${q.to}"></label>
  <button type="submit">Search</button> <a href="/jobs">clear</a>
</form>`;
}

export async function jobRoutes(app: FastifyInstance, opts: { db: Db; actions: StaffActions }): Promise<void> {
  const { db, actions } = opts;

  app.get('/api/jobs', async (request, reply) => {
    const r = await runSearch(db, request.query as Record<string, unknown>);
    if (r.problems.length) return sendError(reply, 'validation_failed', r.problems.join('; '));
    return { jobs: r.jobs.map(({ createdAtExact: _, ...j }) => j), nextCursor: r.nextCursor };
  });

  app.get('/jobs', async (request, reply) => {
    const r = await runSearch(db, request.query as Record<string, unknown>);
    const q = r.query;
    const filtered = q.team || q.type || q.status || q.from || q.to;
    const staff = request.staff;
    let redrive = html``;
    if (staff?.role === 'operator' && q.status === 'failed' && (q.team || q.type) && !q.id && !r.problems.length && (r.teamIds === undefined || r.teamIds.length > 0)) {
      const matched = await countFailedJobs(db, { type: q.type || undefined, teamIds: r.teamIds, cap: actions.redriveMax + 1 });
      if (matched > 0) {
        const n = matched > actions.redriveMax ? `more than ${actions.redriveMax.toLocaleString('en-US')}` : matched.toLocaleString('en-US');
        const first = Math.min(matched, actions.redriveMax).toLocaleString('en-US');
        redrive = html`<div class="actions">${actionButton(staff, '/jobs/redrive', `Redrive ${first} failed job${matched === 1 ? '' : 's'}`, {
          fields: { team: q.team || undefined, type: q.type || undefined },
          confirm: `Requeue ${first} failed jobs (of ${n} that match)?`,
          danger: true,
        })}<span class="muted">${n} failed jobs match${matched > actions.redriveMax ? html`; one redrive requeues the oldest ${actions.redriveMax.toLocaleString('en-US')}` : ''}.</span></div>`;
      }
    }
    const problems = r.problems.length ? html`<p class="notice bad" role="alert">${r.problems.join('; ')}</p>` : html``;
    const teamMissing = r.teamIds && r.teamIds.length === 0 ? html`<p class="notice bad">No team has the id or name “${q.team}”.</p>` : html``;
    const next = r.nextCursor ? html`<a href="/jobs${qs({ ...q, limit: r.limit === 50 ? undefined : String(r.limit), cursor: r.nextCursor })}" rel="next">Next page →</a>` : html``;
    const firstPage = (request.query as Record<string, unknown>).cursor ? html`<a href="/jobs${qs(q)}">← First page</a>` : html``;
    const done = flash((request.query as Record<string, unknown>).done, (request.query as Record<string, unknown>).n);
    const body = html`<h1>Jobs</h1>
${done}
${searchForm(q)}
${problems}${teamMissing}
${redrive}
<p class="muted">${filtered || q.id ? 'Matching jobs' : 'All jobs'}, newest first${r.jobs.length ? `, ${r.jobs.length} on this page` : ''}.</p>
${jobsTable(r.jobs)}
<div class="pager">${firstPage}${next}</div>`;
    return sendPage(reply, page('Jobs · Platform dashboard', body, staff, { current: '/jobs', ...PAGE_ASSETS }), r.problems.length ? 400 : 200);
  });

  app.get<{ Params: { id: string } }>('/api/jobs/:id', async (request, reply) => {
    const id = jobIdFrom(request.params.id);
    const job = id ? await getJobForStaff(db, id) : undefined;
    if (!job) return sendError(reply, 'not_found', 'no such job');
    const [runs, events, audit] = await Promise.all([summariseJobRuns(db, job.id), listJobEvents(db, job.id), listAuditLog(db, { jobId: job.id, limit: 50 })]);
    return { job, runs, events, audit };
  });

  app.get<{ Params: { id: string } }>('/jobs/:id', async (request, reply) => {
    const id = jobIdFrom(request.params.id);
    const job = id ? await getJobForStaff(db, id) : undefined;
    if (!job) return sendError(reply, 'not_found', 'no such job');
    const staff = request.staff;
    const [runs, events, chunks, audit] = await Promise.all([
      summariseJobRuns(db, job.id),
      listJobEvents(db, job.id),
      listJobChunks(db, job.id, 5_000),
      listAuditLog(db, { jobId: job.id, limit: 50 }),
    ]);
    const now = Date.now();
    const waited = job.startedAt ? job.startedAt.getTime() - job.createdAt.getTime() : now - job.createdAt.getTime();
    const ran = job.startedAt ? (job.finishedAt ?? new Date(now)).getTime() - job.startedAt.getTime() : null;
    const ended = job.status === 'completed' || job.status === 'failed' || job.status === 'cancelled';
    const actionsBar = html`<div class="actions">
${!ended ? actionButton(staff, `/jobs/${job.id}/cancel`, 'Cancel job', { confirm: job.status === 'active' ? 'Cancel this running job? It stops at its next chunk boundary.' : 'Cancel this queued job?', danger: true }) : ''}
${job.status === 'failed' || job.status === 'cancelled' ? actionButton(staff, `/jobs/${job.id}/retry`, 'Retry job', { confirm: 'Queue this job again? It resumes from its last committed chunk.' }) : ''}
</div>`;
    const payload = job.payload && typeof job.payload === 'object' ? Object.entries(job.payload) : [];
    const error = job.error;
    const chunkTotals = runs.reduce((a, r) => ({ chunks: a.chunks + r.chunks, rows: a.rows + r.rows, ms: a.ms + r.totalMs }), { chunks: 0, rows: 0, ms: 0 });
    const shownChunks = chunks.slice(-100).reverse();
    const chartSpecs = chunks.length
      ? [
          {
            id: 'chunk-durations',
            title: 'Chunk transactions',
            time: false,
            unit: 'ms',
            bars: true,
            x: chunks.map((c) => c.seq),
            series: [{ label: 'duration', values: chunks.map((c) => c.durationMs), color: '#175cd3' }],
          },
        ]
      : [];
    const body = html`<h1>Job <code>${job.id}</code></h1>
${flash((request.query as Record<string, unknown>).done)}
${actionsBar}
<table class="kv">
<tr><th>type</th><td>${job.type} <span class="muted">(queue ${job.queue})</span></td></tr>
<tr><th>team</th><td><a href="/jobs?team=${job.teamId}">${job.teamName ?? '(deleted team)'}</a> <code class="muted">${job.teamId}</code></td></tr>
<tr><th>status</th><td class="status-${job.status}" id="job-status">${job.status}${job.cancelRequestedAt && job.status === 'active' ? ' (cancel requested: stops at its next chunk boundary)' : ''}</td></tr>
<tr><th>progress</th><td>${progressText(job.progressDone, job.progressTotal)}</td></tr>
<tr><th>attempts</th><td>${job.attempts} <span class="muted">(runs that ended in an error and were retried; ${job.dispatches} dispatch${job.dispatches === 1 ? '' : 'es'}, lease ${job.lease}${job.leaseOwner ? `, held by ${job.leaseOwner}` : ''})</span></td></tr>
<tr><th>created</th><td>${fmtTime(job.createdAt)}</td></tr>
<tr><th>started</th><td>${fmtTime(job.startedAt)} <span class="muted">(waited ${fmtDuration(waited)}${job.startedAt ? '' : ' so far'})</span></td></tr>
<tr><th>finished</th><td>${fmtTime(job.finishedAt)}${ran !== null ? html` <span class="muted">(ran ${fmtDuration(ran)}${job.finishedAt ? '' : ' so far'})</span>` : ''}</td></tr>
${job.cancelRequestedAt ? html`<tr><th>cancel requested</th><td>${fmtTime(job.cancelRequestedAt)}</td></tr>` : ''}
<tr><th>updated</th><td>${fmtTime(job.updatedAt)}</td></tr>
</table>

<h2>Payload</h2>
<p class="muted">What the job was given: ids and small options. Uploaded data stays in the blob store and is not shown.</p>
<table class="kv">
${payload.length ? payload.map(([k, v]) => html`<tr><th>${k}</th><td class="wrap"><code>${jsonSummary(v, 300)}</code></td></tr>`) : html`<tr><td class="muted">empty</td></tr>`}
${job.lockKeys.length ? html`<tr><th>lock keys</th><td><code>${job.lockKeys.join(', ')}</code></td></tr>` : ''}
${job.checkpoint !== null && job.checkpoint !== undefined ? html`<tr><th>checkpoint</th><td class="wrap"><code>${jsonSummary(job.checkpoint, 500)}</code></td></tr>` : ''}
</table>

${error
  ? html`<h2>Error</h2>
<table class="kv">
<tr><th>code</th><td><code>${error.code}</code></td></tr>
<tr><th>message</th><td class="wrap">${error.message}</td></tr>
${error.invalidCount !== undefined ? html`<tr><th>invalid rows</th><td>${error.invalidCount}</td></tr>` : ''}
${error.details?.length ? html`<tr><th>details</th><td class="wrap">${error.details.slice(0, 20).map((d) => html`<code>${jsonSummary(d, 300)}</code><br>`)}${error.details.length > 20 ? html`<span class="muted">… and ${error.details.length - 20} more</span>` : ''}</td></tr>` : ''}
</table>
${error.stack ? html`<h3>Stack trace</h3><pre id="stack">${error.stack}</pre>` : ''}`
  : ''}

${job.result !== null && job.result !== undefined ? html`<h2>Result</h2><pre>${jsonSummary(job.result, 4000)}</pre>` : ''}

<h2>Runs</h2>
${runs.length
  ? html`<p class="muted">${chunkTotals.chunks} chunk transactions, ${chunkTotals.rows} rows, ${fmtDuration(chunkTotals.ms)} inside transactions. A new lease is a new run: a retry, a continuation after a yield or hand-back, or a takeover after a crash.</p>
<table>
<thead><tr><th>lease</th><th>chunks</th><th>seq</th><th>rows</th><th>time in tx</th><th>longest chunk</th><th>first commit</th><th>last commit</th></tr></thead>
<tbody>${runs.map((r) => html`<tr><td class="num">${r.lease}</td><td class="num">${r.chunks}</td><td>${r.firstSeq}–${r.lastSeq}</td><td class="num">${r.rows}</td><td class="num">${fmtDuration(r.totalMs)}</td><td class="num">${r.longestMs} ms</td><td>${fmtTime(r.firstAt)}</td><td>${fmtTime(r.lastAt)}</td></tr>`)}</tbody>
</table>`
  : html`<p class="muted">No chunk committed yet.</p>`}

<h2>Events</h2>
${events.length
  ? html`<table id="events"><thead><tr><th>at</th><th>event</th><th>detail</th></tr></thead><tbody>${events.map(
      (e) => html`<tr><td>${fmtTime(e.at)}</td><td>${e.kind}</td><td class="wrap"><code>${e.detail ? jsonSummary(e.detail, 300) : ''}</code></td></tr>`,
    )}</tbody></table>`
  : html`<p class="muted">No events recorded.</p>`}

${chunks.length
  ? html`<h2>Chunk timeline</h2>
<div class="charts"><div class="chart"><h3>Duration of each chunk transaction (ms, by sequence)</h3><div id="chunk-durations" class="chart-canvas"></div></div></div>
${jsonBlock('chart-data', chartSpecs)}
<table id="chunks"><thead><tr><th>seq</th><th>lease</th><th>rows</th><th>duration</th><th>committed</th></tr></thead><tbody>${shownChunks.map(
      (c, i) => {
        const prev = shownChunks[i + 1];
        const mark = prev && prev.lease !== c.lease ? html` <span class="muted">← new run</span>` : '';
        return html`<tr><td class="num">${c.seq}</td><td class="num">${c.lease}${mark}</td><td class="num">${c.rows}</td><td class="num">${c.durationMs} ms</td><td>${fmtTime(c.committedAt)}</td></tr>`;
      },
    )}</tbody></table>
${chunks.length > shownChunks.length ? html`<p class="muted">The newest ${shownChunks.length} of ${chunks.length}${chunks.length >= 5_000 ? '+' : ''} chunks.</p>` : ''}`
  : ''}

<h2>Staff actions on this job</h2>
${auditTable(audit, { compact: true })}`;
    return sendPage(reply, page(`Job ${job.id} · Platform dashboard`, body, staff, { current: '/jobs', ...(chunks.length ? CHART_ASSETS : PAGE_ASSETS) }));
  });
}

const FLASH: Record<string, string> = {
  cancelled: 'Cancelled: the job was queued and ends now.',
  cancel_requested: 'Cancel requested: the running job stops at its next chunk boundary.',
  requeued: 'Queued again: the job resumes from its last committed chunk.',
  redriven: 'Redrive done.',
};

export function flash(done: unknown, n?: unknown) {
  if (typeof done !== 'string' || !FLASH[done]) return html``;
  const count = typeof n === 'string' && /^\d+$/.test(n) ? ` ${n} job${n === '1' ? '' : 's'} requeued.` : '';
  return html`<p class="notice" role="status">${FLASH[done]}${count}</p>`;
}

import type { FastifyReply } from 'fastify';
import type { StaffIdentity } from '../auth';

/**
 * Server-rendered pages, no client framework and nothing loaded from elsewhere. Every value that
 * reaches HTML goes through `esc` (or the `html` tag, which escapes its interpolations).
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function esc(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** Markup that is already safe (built by `html`), so nesting does not escape it twice. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

type Part = SafeHtml | string | number | null | undefined | readonly Part[];

function render(part: Part): string {
  if (part instanceof SafeHtml) return part.value;
  if (Array.isArray(part)) return part.map(render).join('');
  return esc(part);
}

/** Tagged template: literal markup stays, every interpolated value is escaped unless SafeHtml. */
export function html(strings: TemplateStringsArray, ...values: Part[]): SafeHtml {
  let out = strings[0]!;
  values.forEach((v, i) => {
    out += render(v) + strings[i + 1]!;
  });
  return new SafeHtml(out);
}

const STYLE = `
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
  header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem; background: #1d2330; color: #fff; flex-wrap: wrap; }
  header a { color: #cfd8e6; text-decoration: none; } header a:hover, header a.current { color: #fff; }
  header .who { margin-left: auto; display: flex; gap: .75rem; align-items: center; }
  header form { margin: 0; }
  main { padding: 1.5rem; max-width: 1280px; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb; white-space: nowrap; vertical-align: top; }
  th { background: #eef0f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.wrap { white-space: normal; word-break: break-word; }
  table.kv th { width: 12rem; background: #f7f8fa; }
  code { font-size: 12px; }
  pre { background: #fff; border: 1px solid #e3e6eb; padding: .6rem; overflow: auto; max-height: 24rem; font-size: 12px; margin: 0; }
  .status-failed { color: #b42318; } .status-completed { color: #067647; } .status-active { color: #175cd3; } .status-cancelled { color: #93370d; }
  .card { background: #fff; padding: 1.5rem; max-width: 320px; margin: 10vh auto; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
  .card label { display: block; margin: .75rem 0 .25rem; } .card input { width: 100%; box-sizing: border-box; padding: .4rem; }
  button { padding: .4rem .9rem; cursor: pointer; } .card button { margin-top: 1rem; width: 100%; }
  button.danger { background: #b42318; color: #fff; border: 1px solid #912018; border-radius: 3px; }
  .error { color: #b42318; margin: .5rem 0 0; }
  .notice { background: #ecfdf3; border: 1px solid #abefc6; padding: .5rem .75rem; margin: 0 0 1rem; }
  .notice.bad { background: #fef3f2; border-color: #fecdca; }
  .muted { color: #667085; }
  form.search { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; background: #fff; padding: .75rem; margin-bottom: 1rem; }
  form.search label { display: flex; flex-direction: column; font-size: 12px; color: #475467; gap: .15rem; }
  form.search input, form.search select { padding: .3rem; font: inherit; }
  form.inline { display: inline; margin: 0 .5rem 0 0; }
  .actions { display: flex; gap: .5rem; align-items: center; margin: .5rem 0 1rem; flex-wrap: wrap; }
  .pager { margin: .75rem 0; display: flex; gap: 1rem; }
  .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }
  .chart { background: #fff; padding: .5rem; min-height: 260px; }
  .chart h3 { font-size: .9rem; margin: 0 0 .25rem; }
  .tabs a { margin-right: 1rem; } .tabs a.current { font-weight: 600; color: #1d2330; text-decoration: none; }
`;

/**
 * Our pages load nothing from anywhere but this origin (scripts and the chart library come from
 * /assets, styles are inline, data for charts sits in a JSON block that is never executed), make
 * no requests of their own, may not be framed, and post forms only to this origin. bull-board's
 * own pages under /queues are left alone: its UI has its own needs.
 */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'none'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const NAV = [
  ['/', 'Overview'],
  ['/jobs', 'Jobs'],
  ['/teams', 'Teams'],
  ['/charts', 'Charts'],
  ['/audit', 'Audit log'],
  ['/queues', 'Queues'],
] as const;

export interface PageOptions {
  /** The nav entry to mark as current. */
  current?: string;
  /** Page scripts, served from /assets (the chart pages). */
  scripts?: string[];
  styles?: string[];
}

export function page(title: string, body: SafeHtml, who?: StaffIdentity | null, opts: PageOptions = {}): SafeHtml {
  const nav = who
    ? html`<header>
  <strong>Platform dashboard</strong>
  ${NAV.map(([href, label]) => html`<a href="${href}"${opts.current === href ? new SafeHtml(' class="current"') : ''}>${label}</a>`)}
  <span class="who">${who.username} (${who.role})
    <form method="post" action="/logout">${csrfField(who)}<button type="submit">Sign out</button></form>
  </span>
</header>`
    : html``;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${title}</title>
<style>${new SafeHtml(STYLE)}</style>
${(opts.styles ?? []).map((href) => html`<link rel="stylesheet" href="${href}">`)}
${(opts.scripts ?? []).map((src) => html`<script src="${src}" defer></script>`)}
</head>
<body>
${nav}
<main>
${body}
</main>
</body>
</html>
`;
}

export function sendPage(reply: FastifyReply, markup: SafeHtml, status = 200): FastifyReply {
  return reply
    .code(status)
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'same-origin')
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(markup.value);
}

/** The hidden CSRF field every form that posts with a session carries. */
export function csrfField(who: StaffIdentity | null | undefined): SafeHtml {
  return who?.csrf ? html`<input type="hidden" name="_csrf" value="${who.csrf}">` : html``;
}

/**
 * A one-button form for an action; operators only (viewers get no button: the server would
 * answer 403 anyway). `confirm` asks first (assets/dashboard.js).
 */
export function actionButton(
  who: StaffIdentity | null | undefined,
  action: string,
  label: string,
  opts: { fields?: Record<string, string | undefined>; confirm?: string; danger?: boolean } = {},
): SafeHtml {
  if (who?.role !== 'operator') return html``;
  const fields = Object.entries(opts.fields ?? {}).filter(([, v]) => v !== undefined && v !== '');
  return html`<form class="inline" method="post" action="${action}"${opts.confirm ? html` data-confirm="${opts.confirm}"` : ''}>${csrfField(who)}${fields.map(
    ([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`,
  )}<button type="submit"${opts.danger ? new SafeHtml(' class="danger"') : ''}>${label}</button></form>`;
}

/** Data for a page script, as a JSON block the browser never executes; `<` is escaped so it cannot close the tag. */
export function jsonBlock(id: string, data: unknown): SafeHtml {
  const json = JSON.stringify(data).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
  return html`<script type="application/json" id="${id}">${new SafeHtml(json)}</script>`;
}

export function fmtTime(d: Date | null | undefined): string {
  if (!d) return '–';
  return d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Compact JSON, cut at `max` characters: summaries, never bulk data. */
export function jsonSummary(value: unknown, max = 300): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? 'null';
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max)}… (${text.length.toLocaleString('en-US')} characters)` : text;
}

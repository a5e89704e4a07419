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
  header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem; background: #1d2330; color: #fff; }
  header a { color: #cfd8e6; text-decoration: none; } header a:hover { color: #fff; }
  header .who { margin-left: auto; display: flex; gap: .75rem; align-items: center; }
  header form { margin: 0; }
  main { padding: 1.5rem; max-width: 1200px; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb; white-space: nowrap; }
  th { background: #eef0f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  code { font-size: 12px; }
  .status-failed { color: #b42318; } .status-completed { color: #067647; } .status-active { color: #175cd3; }
  .card { background: #fff; padding: 1.5rem; max-width: 320px; margin: 10vh auto; border-radius: 6px; box-shadow: 0 1px 3px #0002; }
  .card label { display: block; margin: .75rem 0 .25rem; } .card input { width: 100%; box-sizing: border-box; padding: .4rem; }
  button { padding: .4rem .9rem; cursor: pointer; } .card button { margin-top: 1rem; width: 100%; }
  .error { color: #b42318; margin: .5rem 0 0; }
`;

/**
 * Our pages load nothing from anywhere (styles are inline), may not be framed, and post forms only
 * to this origin. bull-board's own pages under /queues are left alone: its UI needs scripts.
 */
const CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function page(title: string, body: SafeHtml, who?: StaffIdentity | null): SafeHtml {
  const nav = who
    ? html`<header>
  <strong>Platform dashboard</strong>
  <a href="/">Overview</a>
  <a href="/queues">Queues</a>
  <span class="who">${who.username} (${who.role})
    <form method="post" action="/logout"><button type="submit">Sign out</button></form>
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

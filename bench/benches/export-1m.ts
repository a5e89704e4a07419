import { rmSync } from 'node:fs';
import { csvHeader, csvRecords, ndjsonRecords } from '../../packages/jobs/src/cms-export/format';
import type { TeamClient } from '../lib/api';
import {
  appPid,
  BIG_FIELDS,
  chunkRows,
  copyFileFor,
  copyIn,
  copyOutToNull,
  downloadToNull,
  jobTimes,
  millionImport,
  millionImportStarted,
  MILLION,
  ndjsonFile,
  pct,
  RssSampler,
  type RssSummary,
  s1,
  watchJob,
} from '../lib/big-data';
import type { BenchContext, BenchModule, BenchRow } from '../lib/types';

type Format = 'ndjson' | 'csv';
/** A larger keyset page, read apart to show what the page size costs. */
const BIG_PAGE = 10_000;

/**
 * Issue 3 (2): an export of 1,000,000 rows (~330 B each) through the platform, in NDJSON and in
 * CSV: `POST /v1/cms-tables/:id/exports` → job completed → `GET /v1/jobs/:id/download` streamed
 * to /dev/null, timed from the POST to the last byte. Baseline: a raw `COPY (select … order by id)
 * TO STDOUT` of the same rows (for CSV the export's columns, one per field, `format csv, header`;
 * for NDJSON the columns as stored: id, identifier and the draft's JSON text), streamed to
 * /dev/null from this process. Target: ratio ≥ 0.6.
 *
 * The rows are those of the 1M import when an earlier benchmark of this run made them, otherwise
 * they are loaded with COPY straight into cms_rows. Before measuring (not timed): VACUUM ANALYZE of
 * cms_rows (no autovacuum of the fresh rows during the runs) and one read of the rows (a warm
 * cache for both sides). For the note, the export's parts are measured apart in this process
 * (measureParts): the keyset page reads alone (the export's SQL, same page size, and two variants)
 * and the formatting alone (the export's own format functions on those pages).
 */
export const export1m: BenchModule = {
  name: 'export-1m',
  description: 'export 1,000,000 rows as NDJSON and CSV: POST → completed → download to /dev/null, vs raw COPY (select …) TO STDOUT',
  async run(ctx) {
    const src = await millionRows(ctx);
    const filter = `table_id = '${src.tableId}' and team_id = '${src.team.teamId}' and deleted_at is null`;

    ctx.log('export-1m: VACUUM ANALYZE cms_rows and a warm-up read (not timed)');
    const prepStarted = performance.now();
    await ctx.pg.query('vacuum (analyze) cms_rows');
    const warm = await ctx.pg.query<{ n: number }>(`select count(*)::int as n, sum(length(draft_data::text))::bigint as b from cms_rows where ${filter}`);
    if (warm.rows[0]!.n !== MILLION) throw new Error(`the table holds ${warm.rows[0]!.n} rows, expected ${MILLION}`);
    const prepS = (performance.now() - prepStarted) / 1000;

    // The export's parts, apart: keyset pages read as the worker reads them, then formatted.
    const parts = await measureParts(ctx, src.tableId, src.team.teamId, ctx.worker.chunkSize);

    const rows: BenchRow[] = [];
    for (const format of ['ndjson', 'csv'] as const) {
      const p = await platformExport(ctx, src.team, src.tableId, format);
      // CSV: the export's columns, one per field, quoted by COPY. NDJSON: the row's columns as
      // stored (id, identifier, the draft's JSON text), the fastest way out for the same rows;
      // building each line in SQL (json_build_object) would make the baseline ~3× slower.
      const fieldsSql = BIG_FIELDS.map((f) => `draft_data->>'${f.name}' as "${f.name}"`).join(', ');
      const sql =
        format === 'csv'
          ? `copy (select id, identifier, ${fieldsSql} from cms_rows where ${filter} order by id) to stdout with (format csv, header)`
          : `copy (select id, identifier, draft_data from cms_rows where ${filter} order by id) to stdout`;
      const client = await ctx.pg.connect();
      let base: { ms: number; bytes: number };
      try {
        ctx.log(`export-1m: baseline COPY TO STDOUT (${format})`);
        base = await copyOutToNull(client, sql);
      } finally {
        client.release();
      }
      const baseS = base.ms / 1000;
      const inTx = p.txS;
      const fmtS = format === 'csv' ? parts.csvS : parts.ndjsonS;
      const rest = p.pagesS - parts.readS - fmtS - inTx;
      rows.push({
        bench: `export-1m ${format}`,
        platform: { value: MILLION / p.seconds, unit: 'rows/s' },
        baseline: { value: MILLION / baseS, unit: 'rows/s' },
        better: 'higher',
        note:
          `target ≥ 0.6; ${s1(p.seconds)} vs ${s1(baseS)}, ${(p.bytes / 2 ** 20).toFixed(0)} MiB vs ${(base.bytes / 2 ** 20).toFixed(0)} MiB. ` +
          `Platform: POST→202 ${(p.acceptS * 1000).toFixed(0)} ms, queued ${s1(p.queuedS)}, ` +
          `count + ${p.pages} pages of ≤${p.pageRows.toLocaleString('en-US')} rows ${s1(p.pagesS)} (${pct(p.pagesS, p.seconds)}; ${s1(inTx)} in checkpoint tx, longest ${p.maxTxMs} ms), ` +
          `file built ${s1(p.finalizeS)}, poll lag ${s1(p.pollS)}, download ${s1(p.downloadS)} (${pct(p.downloadS, p.seconds)}); ` +
          `measured apart in the bench process with the export's SQL and format code: keyset reads of ${p.pageRows.toLocaleString('en-US')}-row pages ${s1(parts.readS)} ` +
          `(${s1(parts.textReadS)} reading draft_data::text, no JSON.parse; ${s1(parts.bigPageReadS)} with ${BIG_PAGE.toLocaleString('en-US')}-row pages), ` +
          `${format} formatting ${s1(fmtS)}: together ${s1(parts.readS + fmtS)} of the ${s1(p.pagesS)}` +
          (rest > 0
            ? `, the rest (~${s1(rest)}) being the part-file writes (write + fdatasync per page), COMMITs and the worker's overhead; `
            : ` (more than the worker took: the two were measured at different moments of a noisy machine); `) +
          `baseline: COPY (select ${format === 'csv' ? 'id, identifier, a column per field … format csv, header' : 'id, identifier, draft_data'} … order by id) TO STDOUT → /dev/null; ` +
          `worker peak RSS ${p.rssMb.toFixed(0)} MiB; rows ${src.how}; prep (vacuum, warm-up) ${s1(prepS)}, not timed`,
      });
    }
    return rows;
  },
};

interface Source {
  team: TeamClient;
  tableId: string;
  how: string;
}

/** The million rows: the import's when it already ran in this run, else loaded by COPY into cms_rows. */
async function millionRows(ctx: BenchContext): Promise<Source> {
  if (millionImportStarted(ctx)) {
    const m = await millionImport(ctx, 'export-1m');
    return { team: m.team, tableId: m.tableId, how: `of the 1M import (${m.ranBy})` };
  }
  const team = await ctx.newTeam('bench: 1M export');
  const project = await team.createProject('1M export');
  const table = await team.createTable(project.id, 'posts 1M', BIG_FIELDS);
  const file = await ndjsonFile(MILLION);
  ctx.log('export-1m: loading 1,000,000 rows with COPY into cms_rows (not timed)');
  const copyFile = await copyFileFor(file, table.id, team.teamId);
  const client = await ctx.pg.connect();
  try {
    const r = await copyIn(client, 'cms_rows', copyFile);
    if (r.rows !== MILLION) throw new Error(`COPY loaded ${r.rows} rows, expected ${MILLION}`);
  } finally {
    client.release();
    rmSync(copyFile.path, { force: true });
  }
  return { team, tableId: table.id, how: 'loaded by COPY into cms_rows' };
}

/**
 * The export's parts, apart, in this process: keyset pages as `exportRowsPage` reads them (same
 * SQL shape and page size), each format's own functions over them, and two variants of the read:
 * the draft as text (no JSON.parse in the driver) and pages of BIG_PAGE rows. Interleaved page by
 * page (a BIG_PAGE read from the same cursor every BIG_PAGE / pageRows pages), so a change of the
 * machine's load during the measurement hits every part alike.
 */
async function measureParts(ctx: BenchContext, tableId: string, teamId: string, pageRows: number) {
  const fields = BIG_FIELDS;
  const t = { read: 0, text: 0, big: 0, ndjson: 0, csv: 0 };
  type Page = { id: string; identifier: string; data: any }[];
  const page = async (column: string, rows: number, after: string | null): Promise<Page> =>
    (
      await client.query<{ id: string; identifier: string; data: any }>(
        `select id, identifier, ${column} as data from cms_rows
         where table_id = $1 and team_id = $2 and deleted_at is null ${after ? 'and id > $4' : ''}
         order by id asc limit $3`,
        after ? [tableId, teamId, rows, after] : [tableId, teamId, rows],
      )
    ).rows;
  const timed = async <T>(key: keyof typeof t, fn: () => Promise<T> | T): Promise<T> => {
    const t0 = performance.now();
    const out = await fn();
    t[key] += performance.now() - t0;
    return out;
  };
  const every = Math.max(1, Math.round(BIG_PAGE / pageRows));
  let after: string | null = null;
  let total = 0;
  let bigTotal = 0;
  let n = 0;
  const client = await ctx.pg.connect();
  try {
    for (;; n++) {
      if (n % every === 0) {
        const cursor: string | null = after;
        bigTotal += (await timed('big', () => page('draft_data', BIG_PAGE, cursor))).length;
      }
      const cursor: string | null = after;
      const rows: Page = await timed('read', () => page('draft_data', pageRows, cursor));
      await timed('text', () => page('draft_data::text', pageRows, cursor));
      await timed('ndjson', () => Buffer.from(ndjsonRecords(fields, rows), 'utf8'));
      await timed('csv', () => Buffer.from((total === 0 ? csvHeader(fields) : '') + csvRecords(fields, rows), 'utf8'));
      total += rows.length;
      if (rows.length < pageRows) break;
      after = rows.at(-1)!.id;
    }
  } finally {
    client.release();
  }
  if (total !== MILLION || bigTotal !== MILLION) throw new Error(`the keyset reads saw ${total} and ${bigTotal} rows, expected ${MILLION}`);
  const sec = (ms: number) => ms / 1000;
  return { readS: sec(t.read), textReadS: sec(t.text), bigPageReadS: sec(t.big), ndjsonS: sec(t.ndjson), csvS: sec(t.csv) };
}

async function platformExport(ctx: BenchContext, team: TeamClient, tableId: string, format: Format) {
  const worker = new RssSampler(appPid('worker'));
  worker.label = 'export';
  let rss: RssSummary;
  let started: number;
  let accepted: number;
  let ended: { at: number };
  let downloaded: number;
  let dl: { status: number; bytes: number };
  let jobId: string;
  try {
    ctx.log(`export-1m: platform export (${format})`);
    started = performance.now();
    const job = (await team.request<{ id: string }>('POST', `/v1/cms-tables/${tableId}/exports`, { format }, [202])).body;
    accepted = performance.now();
    jobId = job.id;
    ended = await watchJob(ctx, jobId, { timeoutMs: 600_000 });
    worker.label = 'download';
    dl = await downloadToNull(`${ctx.apiUrl}/v1/jobs/${jobId}/download`, team.token, ctx.signal);
    downloaded = performance.now();
  } finally {
    rss = worker.stop();
  }
  const job = await jobTimes(ctx.pg, jobId);
  if (job.status !== 'completed') throw new Error(`the ${format} export ended ${job.status}: ${JSON.stringify(job.error).slice(0, 300)}`);
  if (job.result?.rows !== MILLION) throw new Error(`the ${format} export reports ${JSON.stringify(job.result)}, expected ${MILLION} rows`);
  if (dl.status !== 200 || dl.bytes !== job.result.bytes) throw new Error(`the download answered ${dl.status} with ${dl.bytes} bytes, the job wrote ${job.result.bytes}`);
  const chunks = await chunkRows(ctx.pg, jobId);
  const pages = chunks.filter((c) => c.rows > 0);
  const lastPage = pages.at(-1)!;
  const lastChunk = chunks.at(-1)!;
  const pagesS = (lastPage.beginMs + lastPage.durationMs - job.startedMs) / 1000;
  return {
    jobId,
    bytes: dl.bytes,
    seconds: (downloaded - started) / 1000,
    acceptS: (accepted - started) / 1000,
    queuedS: job.queuedS,
    pagesS,
    pages: pages.length,
    pageRows: Math.max(...pages.map((c) => c.rows)),
    txS: chunks.reduce((a, c) => a + c.durationMs, 0) / 1000,
    maxTxMs: Math.max(...chunks.map((c) => c.durationMs)),
    finalizeS: (job.finishedMs - (lastChunk.beginMs + lastChunk.durationMs)) / 1000,
    pollS: (ended.at - accepted) / 1000 - job.queuedS - job.runS,
    downloadS: (downloaded - ended.at) / 1000,
    rssMb: rss.peakMb,
  };
}

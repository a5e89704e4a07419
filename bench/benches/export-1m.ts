import { rmSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { exportPageCopySql } from '../../packages/db/src/queries/cms-export';
import { CopyRecords } from '../../packages/jobs/src/cms-export/copy-records';
import { MAX_UUID, MIN_UUID } from '../../packages/db/src/ids';
import type { TeamClient } from '../lib/api';
import { describeCpu, startCpuWindow, type CpuWindow } from '../lib/cpu-sampler';
import {
  appPid,
  BIG_FIELDS,
  chunkRows,
  copyFileFor,
  copyIn,
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
import { startReadClient, type ReadClient } from '../lib/read-client';
import type { BenchContext, BenchModule, BenchRow } from '../lib/types';

type Format = 'ndjson' | 'csv';
/** The worker's page size (WORKER_EXPORT_PAGE_ROWS, left at its default by the bench). */
const PAGE_ROWS = 20_000;

/**
 * Issue 3 (2): an export of 1,000,000 rows (~330 B each) through the platform, in NDJSON and in
 * CSV: `POST /v1/cms-tables/:id/exports` → job completed → `GET /v1/jobs/:id/download` streamed
 * to /dev/null, timed from the POST to the last byte. Baseline: a raw `COPY (select … in id order)
 * TO STDOUT` of the same rows (for CSV the export's columns, one per field, `format csv, header`;
 * for NDJSON the columns as stored: id, identifier and the draft's JSON text), streamed to
 * /dev/null from this process; the query written three ways (`order by id`; bounded on
 * `(table_id, id)`; the same with PostgreSQL's seq scans and sorts off, which leaves the index),
 * the fastest counting. Target: ratio ≥ 0.6.
 *
 * The rows are those of the 1M import when an earlier benchmark of this run made them, otherwise
 * they are loaded with COPY straight into cms_rows. Before measuring (not timed): VACUUM ANALYZE of
 * cms_rows (no autovacuum of the fresh rows during the runs) and one read of the rows (a warm
 * cache for both sides). For the note, the export's page reads are measured apart in this process
 * (measurePages): the export's own page COPYs (same SQL, same page size) read to nothing, and the
 * same pages without the SQL formatting (the baseline's columns, keyset-paged).
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

    const rows: BenchRow[] = [];
    // Started before anything is timed; both sides read through it.
    const reader = await startReadClient(ctx.databaseUrl, ctx.signal);
    try {
      for (const format of ['ndjson', 'csv'] as const) {
        const p = await platformExport(ctx, reader, src.team, src.tableId, format);
        const pages = await measurePages(ctx, src.tableId, src.team.teamId, format, PAGE_ROWS);
        // CSV: the export's columns, one per field, quoted by COPY. NDJSON: the row's columns as
        // stored (id, identifier, the draft's JSON text), the fastest way out for the same rows;
        // building each line in SQL (json_build_object) would make the baseline ~3× slower.
        const fieldsSql = BIG_FIELDS.map((f) => `draft_data->>'${f.name}' as "${f.name}"`).join(', ');
        const columns = format === 'csv' ? `id, identifier, ${fieldsSql}` : 'id, identifier, draft_data';
        const options = format === 'csv' ? ' with (format csv, header)' : '';
        // Three ways to write the baseline's query, and the fastest counts. As written by hand
        // (`where table_id = … order by id`), and even bounded on `(table_id, id)` as the export's
        // pages are, PostgreSQL may scan and sort the whole table in parallel once cms_rows holds
        // other tables' rows (the full run's does: 3.0–3.4 s where the index took ~2.4 s alone);
        // the third forbids that plan (enable_seqscan and enable_sort off), leaving the index.
        const bounded = `(table_id, id) >= ('${src.tableId}', '${MIN_UUID}') and (table_id, id) <= ('${src.tableId}', '${MAX_UUID}') and team_id = '${src.team.teamId}' and deleted_at is null`;
        const baselines = [
          { name: 'order by id', sql: `copy (select ${columns} from cms_rows where ${filter} order by id) to stdout${options}` },
          { name: '(table_id, id) bounds', sql: `copy (select ${columns} from cms_rows where ${bounded} order by table_id, id) to stdout${options}` },
          { name: 'the same, no seq scan or sort', sql: `copy (select ${columns} from cms_rows where ${bounded} order by table_id, id) to stdout${options}`, forceIndex: true },
        ];
        const measured: { name: string; plan: string; ms: number; bytes: number; cpu: CpuWindow | undefined }[] = [];
        for (const b of baselines) {
          ctx.log(`export-1m: baseline COPY TO STDOUT (${format}, ${b.name})`);
          if (b.forceIndex) await reader.query('set enable_seqscan = off; set enable_sort = off');
          const plan = await planOf(reader, b.sql);
          const cpu = startCpuWindow();
          const r = await reader.copyOut(b.sql);
          measured.push({ name: b.name, plan, ...r, cpu: cpu.stop() });
          if (b.forceIndex) await reader.query('reset enable_seqscan; reset enable_sort');
        }
        const base = measured.reduce((a, b) => (b.ms < a.ms ? b : a));
        const baseCpu = base.cpu;
        const baseS = base.ms / 1000;
        const inTx = p.txS;
        const rest = p.pagesS - pages.exportS - inTx;
        rows.push({
          bench: `export-1m ${format}`,
          platform: { value: MILLION / p.seconds, unit: 'rows/s' },
          baseline: { value: MILLION / baseS, unit: 'rows/s' },
          better: 'higher',
          note:
            `target ≥ 0.6; ${s1(p.seconds)} vs ${s1(baseS)}, ${(p.bytes / 2 ** 20).toFixed(0)} MiB vs ${(base.bytes / 2 ** 20).toFixed(0)} MiB. ` +
            `Platform: POST→202 ${(p.acceptS * 1000).toFixed(0)} ms, queued ${s1(p.queuedS)}, ` +
            `bounds ${s1(p.countS)} + count and pages of ${PAGE_ROWS.toLocaleString('en-US')} rows in ${p.chunks} chunks ${s1(p.pagesS)} (${pct(p.pagesS, p.seconds)}; ${s1(inTx)} in checkpoint tx, longest ${p.maxTxMs} ms), ` +
            `file built ${s1(p.finalizeS)}, poll lag ${s1(p.pollS)}, download ${s1(p.downloadS)} (${pct(p.downloadS, p.seconds)}); ` +
            `measured apart in the bench process: the export's page COPYs (PostgreSQL formats the ${format}) read to nothing ${s1(pages.exportS)}, ` +
            `the same keyset pages of the baseline's columns ${s1(pages.plainS)}` +
            (rest > 0
              ? `; the rest of the worker's page time (~${s1(rest)}) is the part-file writes (write + fdatasync per page) and the worker's overhead; `
              : ` (more than the worker took: measured at different moments of a noisy machine); `) +
            `baseline: COPY (select ${format === 'csv' ? 'id, identifier, a column per field … format csv, header' : 'id, identifier, draft_data'} …) TO STDOUT → /dev/null, the fastest of ` +
            `${measured.map((m) => `${m.name} ${s1(m.ms / 1000)} (${m.plan})`).join(', ')}; ` +
            `${describeCpu(p.cpuJob)} from the POST to the job's end, ${describeCpu(p.cpuDownload)} during the download, ${describeCpu(baseCpu)} during the baseline; ` +
            `worker peak RSS ${p.rssMb.toFixed(0)} MiB; rows ${src.how}; prep (vacuum, warm-up) ${s1(prepS)}, not timed`,
        });
      }
    } finally {
      await reader.close();
    }
    return rows;
  },
};

interface Source {
  team: TeamClient;
  tableId: string;
  how: string;
}

/** The scans and sorts of a COPY's query plan, in one line. */
async function planOf(reader: ReadClient, copySql: string): Promise<string> {
  const rows = await reader.query<{ 'QUERY PLAN': string }>(`explain ${copySql.replace(/^copy \((.*)\) to stdout.*$/s, '$1')}`);
  const nodes = rows.map((x) => x['QUERY PLAN'].replace(/^[\s->]+/, '').replace(/\s+\(cost=.*$/, '').replace(/ on cms_rows$/, ''));
  return nodes.filter((n) => /Scan|Sort|Gather/.test(n)).join(' ← ');
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
 * The export's page reads alone, in this process: its own page COPYs (same SQL and page size, the
 * output parsed by the same record reader and dropped), and the same keyset pages selecting the
 * baseline's plain columns: the difference is what formatting in SQL costs.
 */
async function measurePages(ctx: BenchContext, tableId: string, teamId: string, format: Format, pageRows: number) {
  const client = await ctx.pg.connect();
  const filter = { tableId, teamId, published: false };
  try {
    const timePages = async (as: Format, sqlFor: (afterId: string | null) => string) => {
      const t0 = performance.now();
      let after: string | null = null;
      let total = 0;
      for (;;) {
        const records = new CopyRecords(sqlFor(after), as);
        client.query(records.submittable());
        await pipeline(records, new Writable({ write: (_c: Buffer, _e, cb) => cb() }));
        total += records.rows;
        if (records.rows < pageRows) break;
        after = records.lastId;
      }
      if (total !== MILLION) throw new Error(`the page reads saw ${total} rows, expected ${MILLION}`);
      return (performance.now() - t0) / 1000;
    };
    const exportS = await timePages(format, (afterId) => exportPageCopySql({ ...filter, fields: BIG_FIELDS, format, limit: pageRows, afterId, utf8Server: true }));
    const plain = format === 'csv' ? BIG_FIELDS.map((f) => `draft_data->>'${f.name}'`).join(', ') : 'draft_data';
    // Output as CSV whatever the format, so the reader finds each record's id at its start.
    const plainS = await timePages('csv', (afterId) =>
        `copy (select id, identifier, ${plain} from cms_rows where (table_id, id) > ('${tableId}', '${afterId ?? MIN_UUID}') and (table_id, id) <= ('${tableId}', '${MAX_UUID}')` +
        ` and team_id = '${teamId}' and deleted_at is null order by table_id, id limit ${pageRows}) to stdout (format csv)`,
    );
    return { exportS, plainS };
  } finally {
    client.release();
  }
}

async function platformExport(ctx: BenchContext, reader: ReadClient, team: TeamClient, tableId: string, format: Format) {
  const worker = new RssSampler(appPid('worker'));
  worker.label = 'export';
  let rss: RssSummary;
  let started: number;
  let accepted: number;
  let ended: { at: number };
  let downloaded: number;
  let dl: { status: number; bytes: number };
  let jobId: string;
  let cpuJob: CpuWindow | undefined;
  let cpuDownload: CpuWindow | undefined;
  try {
    ctx.log(`export-1m: platform export (${format})`);
    let cpu = startCpuWindow();
    started = performance.now();
    const job = (await team.request<{ id: string }>('POST', `/v1/cms-tables/${tableId}/exports`, { format }, [202])).body;
    accepted = performance.now();
    jobId = job.id;
    ended = await watchJob(ctx, jobId, { timeoutMs: 600_000 });
    cpuJob = cpu.stop();
    cpu = startCpuWindow();
    worker.label = 'download';
    dl = await reader.download(`${ctx.apiUrl}/v1/jobs/${jobId}/download`, team.token);
    downloaded = performance.now();
    cpuDownload = cpu.stop();
  } finally {
    rss = worker.stop();
  }
  const job = await jobTimes(ctx.pg, jobId);
  if (job.status !== 'completed') throw new Error(`the ${format} export ended ${job.status}: ${JSON.stringify(job.error).slice(0, 300)}`);
  if (job.result?.rows !== MILLION) throw new Error(`the ${format} export reports ${JSON.stringify(job.result)}, expected ${MILLION} rows`);
  if (dl.status !== 200 || dl.bytes !== job.result.bytes) throw new Error(`the download answered ${dl.status} with ${dl.bytes} bytes, the job wrote ${job.result.bytes}`);
  const chunks = await chunkRows(ctx.pg, jobId);
  // Chunks that carried rows: each is the pages read in about half a second, with one checkpoint.
  const pages = chunks.filter((c) => c.rows > 0);
  const lastPage = pages.at(-1)!;
  const lastChunk = chunks.at(-1)!;
  const pagesS = (lastPage.beginMs + lastPage.durationMs - job.startedMs) / 1000;
  // The first chunk commits the ranges' cuts (exportBounds); the row count runs beside the first pages.
  const countS = (chunks[0]!.beginMs + chunks[0]!.durationMs - job.startedMs) / 1000;
  return {
    jobId,
    bytes: dl.bytes,
    seconds: (downloaded - started) / 1000,
    acceptS: (accepted - started) / 1000,
    queuedS: job.queuedS,
    pagesS,
    countS,
    chunks: pages.length,
    txS: chunks.reduce((a, c) => a + c.durationMs, 0) / 1000,
    maxTxMs: Math.max(...chunks.map((c) => c.durationMs)),
    finalizeS: (job.finishedMs - (lastChunk.beginMs + lastChunk.durationMs)) / 1000,
    pollS: (ended.at - accepted) / 1000 - job.queuedS - job.runS,
    downloadS: (downloaded - ended.at) / 1000,
    rssMb: rss.peakMb,
    cpuJob,
    cpuDownload,
  };
}

import { randomBytes } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { copyValue } from '../../packages/jobs/src/cms/copy-in';
import { ndjsonRow } from '../../packages/jobs/src/cms-import/rows';
import { readLines } from '../../packages/jobs/src/lines';
import { uuidv7 } from '@platform/db';
import type { TeamClient } from '../lib/api';
import { BIG_FIELDS, COPY_COLUMNS, copyFileFor, copyIn, millionImport, MILLION, ndjsonFile, pct, quiesce, rate, s1 } from '../lib/big-data';
import type { BenchContext, BenchModule } from '../lib/types';

/** Rows of the side check that compares the write pass's statements (old and current) with one COPY, table for table. */
const SIDE_ROWS = 100_000;

/**
 * Issue 3 (1): a 1,000,000-row NDJSON import (~330-byte rows, mode=insert, onError=abort, the
 * defaults) through the platform, from the first byte of the upload (an HTTP POST streamed from a
 * file on disk) to the job seen completed in the history, against a raw `COPY … FROM STDIN` of the
 * same rows (converted beforehand to the columns of cms_rows, as the importer stores them) into a
 * scratch table `LIKE cms_rows INCLUDING ALL` (same columns, defaults, primary key and indexes, the
 * partial unique index included) plus the same foreign key to cms_tables, holding a copy of the
 * rows cms_rows held when the platform's import began (the earlier benches' in a full run, so both
 * sides write into indexes of the same size): one statement, one transaction. Target: ratio ≥ 0.6.
 *
 * Also the longest chunk transaction (max job_chunks.duration_ms, by PostgreSQL's clock; the
 * worker's own timing, job_chunks.worker_ms, beside it) and the chunk count, per pass, and where the time goes: the
 * upload, the validate pass (which writes one identifier claim per row), the write pass, and the
 * end of the job (dropping the claims table). The import may already have been run by worker-rss in
 * this run (it is run once and shared); its timing is the same either way.
 */
export const import1m: BenchModule = {
  name: 'import-1m',
  description: 'a 1,000,000-row NDJSON import: upload → job completed, rows/s, vs raw COPY into a LIKE cms_rows table holding the same earlier rows',
  async run(ctx) {
    const m = await millionImport(ctx, 'import-1m');
    const r = m.run;
    const file = await ndjsonFile(MILLION);

    // --- the baseline: raw COPY of the same rows into a table shaped like cms_rows -------------
    const project = await m.team.createProject('1M COPY baseline');
    const base = await m.team.createTable(project.id, 'posts COPY baseline', BIG_FIELDS);
    const scratch = `bench_copy_${randomBytes(4).toString('hex')}`;
    ctx.log(`import-1m: converting the file to cms_rows columns for COPY (not timed)`);
    const convStarted = performance.now();
    const copyFile = await copyFileFor(file, base.id, m.team.teamId);
    const convS = (performance.now() - convStarted) / 1000;
    const client = await ctx.pg.connect();
    let copy: { ms: number; rows: number };
    let seeded = 0;
    try {
      await client.query(`create table ${scratch} (like cms_rows including all)`);
      // The rows cms_rows held when the platform's import began (earlier benches' in a full run),
      // so that both sides write into indexes of the same size.
      seeded = (await client.query(`insert into ${scratch} select * from cms_rows where table_id <> $1`, [m.tableId])).rowCount ?? 0;
      await client.query(`alter table ${scratch} add foreign key (table_id) references cms_tables (id) on delete cascade`);
      await client.query(`vacuum (analyze) ${scratch}`);
      await quiesce(ctx);
      ctx.log(`import-1m: COPY of ${copyFile.rows.toLocaleString('en-US')} rows (${(copyFile.bytes / 2 ** 20).toFixed(0)} MiB) into ${scratch}`);
      copy = await copyIn(client, scratch, copyFile);
      if (copy.rows !== MILLION) throw new Error(`COPY loaded ${copy.rows} rows, expected ${MILLION}`);
    } finally {
      await client.query(`drop table if exists ${scratch}`).catch(() => {});
      client.release();
      rmSync(copyFile.path, { force: true });
    }
    const copyS = copy.ms / 1000;

    // The importer's own line reader and row check over the file, in this process: what one pass
    // spends in JavaScript before any database work (the job reads and checks the file twice).
    ctx.log('import-1m: parsing and checking the file in-process (the JS part of one pass)');
    const parseStarted = performance.now();
    let parsed = 0;
    let line = 0;
    for await (const l of readLines(createReadStream(file.path, { highWaterMark: 64 * 1024 }))) {
      const row = ndjsonRow(BIG_FIELDS, ++line, l.text);
      if (row.problems.length) throw new Error(`line ${line}: ${row.problems[0]!.message}`);
      parsed++;
    }
    if (parsed !== MILLION) throw new Error(`parsed ${parsed} rows, expected ${MILLION}`);
    const parseS = (performance.now() - parseStarted) / 1000;

    const v = r.validate;
    const w = r.write;
    // The write pass's former INSERT … SELECT FROM unnest(…) and its COPY per chunk against one COPY on the same rows, each into an
    // empty LIKE cms_rows table, with the write pass's mean chunk size: the statement's own cost.
    const sideChunk = Math.max(100, Math.round(w.rows / Math.max(1, w.dataChunks)));
    const side = await insertVersusCopy(ctx, m.team, base.id, sideChunk);
    const chunkCount = r.chunks.length;
    const maxTx = Math.max(v.maxMs, w.maxMs);
    const shared = m.ranBy === 'import-1m' ? '' : ` (import run by ${m.ranBy}, shared)`;
    const others = r.seconds - r.uploadS - r.job.queuedS - v.wallS - w.wallS - r.finalizeS;
    return [
      {
        bench: 'import-1m rows/s',
        platform: { value: MILLION / r.seconds, unit: 'rows/s' },
        baseline: { value: MILLION / copyS, unit: 'rows/s' },
        better: 'higher',
        note:
          `target ≥ 0.6${shared}; ${s1(r.seconds)} vs ${s1(copyS)}, ${(file.bytes / 2 ** 20).toFixed(0)} MiB NDJSON, ~${Math.round(file.bytes / MILLION)} B/row. ` +
          `Platform: upload→202 ${s1(r.uploadS)} (${pct(r.uploadS, r.seconds)}), queued ${s1(r.job.queuedS)}, ` +
          `validate pass ${s1(v.wallS)} (${pct(v.wallS, r.seconds)}; ${s1(v.txS)} in chunk tx writing 1M identifier claims), ` +
          `write pass ${s1(w.wallS)} (${pct(w.wallS, r.seconds)}; ${s1(w.txS)} in chunk tx), ` +
          `end of job ${s1(r.finalizeS)} (${pct(r.finalizeS, r.seconds)}; dropping the claims table, deleting the file), ` +
          `poll/other ${s1(Math.max(0, others))}${r.job.attempts > 0 ? `; ${r.job.attempts} failed run(s) retried` : ''}. ` +
          `The platform wrote into cms_rows holding ${r.tableRowsBefore.toLocaleString('en-US')} rows of earlier benches; ` +
          `baseline: one COPY FROM STDIN (${(copy.ms / 1000).toFixed(1)} s incl. commit) into a LIKE cms_rows INCLUDING ALL + FK to cms_tables holding a copy of those ${seeded.toLocaleString('en-US')} rows; ` +
          `VACUUM ANALYZE + CHECKPOINT before each side, not timed; ` +
          `conversion to columns beforehand ${s1(convS)}, not timed`,
      },
      {
        bench: 'import-1m write pass only',
        platform: { value: MILLION / w.wallS, unit: 'rows/s' },
        baseline: { value: MILLION / copyS, unit: 'rows/s' },
        better: 'higher',
        note:
          `the inserts alone (${rate(MILLION, w.wallS)} over ${s1(w.wallS)}), without upload, validate pass and claim cleanup; ` +
          `${s1(w.txS)} inside the chunk tx (COPY, checkpoint, timeline row), ${s1(w.wallS - w.txS)} outside (COMMIT, reading ahead, pool). ` +
          `Same ${SIDE_ROWS.toLocaleString('en-US')} rows into empty LIKE cms_rows tables from this process: ` +
          `one COPY ${s1(side.copyS)}; in ${side.chunks} tx of ${sideChunk.toLocaleString('en-US')} rows (the write pass's mean chunk), interleaved: ` +
          `INSERT … SELECT FROM unnest($ids, $idents, $jsonb[]) (the write pass's statement until 2026-11-27) ${s1(side.insertS)}, COPY FROM STDIN per chunk (its statement since) ${s1(side.chunkCopyS)} ` +
          `(unnest ÷ one COPY ${(side.copyS / side.insertS).toFixed(2)}×, chunked COPY ÷ one COPY ${(side.copyS / side.chunkCopyS).toFixed(2)}×). ` +
          `Validate pass alone ${rate(MILLION, v.wallS)}: ${s1(v.txS)} in tx inserting 1M claims into the job's claims table, ${s1(v.wallS - v.txS)} outside ` +
          `(parsing and checking, and at its end the query for identifiers that exist or repeat). ` +
          `Reading + parsing + checking the file once with the importer's code, alone in this process: ${s1(parseS)} (the job does it in each pass, overlapped with the DB by its read-ahead)`,
      },
      {
        bench: 'import-1m longest tx',
        platform: { value: maxTx, unit: 'ms' },
        baseline: { value: copy.ms, unit: 'ms' },
        better: 'lower',
        note:
          `${chunkCount.toLocaleString('en-US')} chunk transactions${r.leases > 1 ? ` over ${r.leases} runs` : ''}: ` +
          `validate ${v.chunks} (${v.dataChunks} with rows, ${v.minRows.toLocaleString('en-US')}–${v.maxRows.toLocaleString('en-US')} rows, max ${v.maxMs} ms, median ${v.p50Ms} ms), ` +
          `write ${w.chunks} (${w.dataChunks} with rows, ${w.minRows.toLocaleString('en-US')}–${w.maxRows.toLocaleString('en-US')} rows, max ${w.maxMs} ms, median ${w.p50Ms} ms); ` +
          `max job_chunks.duration_ms, by PostgreSQL's clock (BEGIN to the checkpoint statement, which the COMMIT follows in the same query); ` +
          `as the worker timed them (to the COMMIT's answer, its own delays included): longest ${Math.max(v.maxWorkerMs, w.maxWorkerMs)} ms; WORKER_CHUNK_SIZE ${ctx.worker.chunkSize.toLocaleString('en-US')} to start, sized to the chunk budget; baseline: the single COPY transaction`,
      },
    ];
  },
};

/**
 * The first SIDE_ROWS rows, three ways, each into its own empty LIKE cms_rows table (+ FK): one
 * COPY of them all; and, chunk by chunk (alternating which goes first, so load drifts hit both),
 * the write pass's INSERT … SELECT FROM unnest(…) in one transaction per chunk, and a COPY FROM
 * STDIN of the same chunk in one transaction per chunk (what a COPY-based write pass would do).
 */
async function insertVersusCopy(ctx: BenchContext, team: TeamClient, tableId: string, chunkRows: number) {
  const file = await ndjsonFile(SIDE_ROWS);
  const copyFile = await copyFileFor(file, tableId, team.teamId);
  const rows: { ident: string; data: string }[] = [];
  for await (const l of readLines(createReadStream(file.path))) {
    if (!l.text) continue;
    const { identifier, ...data } = JSON.parse(l.text) as Record<string, unknown>;
    rows.push({ ident: String(identifier), data: JSON.stringify(data) });
  }
  const suffix = randomBytes(4).toString('hex');
  const tables = { one: `bench_copy_a_${suffix}`, unnest: `bench_copy_b_${suffix}`, chunkCopy: `bench_copy_c_${suffix}` };
  const client = await ctx.pg.connect();
  try {
    for (const t of Object.values(tables)) {
      await client.query(`create table ${t} (like cms_rows including all)`);
      await client.query(`alter table ${t} add foreign key (table_id) references cms_tables (id) on delete cascade`);
    }
    const copy = await copyIn(client, tables.one, copyFile);
    if (copy.rows !== SIDE_ROWS) throw new Error(`COPY loaded ${copy.rows} rows, expected ${SIDE_ROWS}`);
    let chunks = 0;
    let insertMs = 0;
    let chunkCopyMs = 0;
    const viaUnnest = async (part: typeof rows) => {
      const t0 = performance.now();
      await client.query('begin');
      // The statement of packages/jobs/src/cms/row-writes.ts insertRows, on the scratch table.
      await client.query(
        `insert into ${tables.unnest} (id, table_id, team_id, identifier, draft_data)
         select u.id, $1, $2, coalesce(u.ident, u.id::text), u.d
         from unnest($3::uuid[], $4::text[], $5::jsonb[]) as u(id, ident, d)`,
        [tableId, team.teamId, part.map(() => uuidv7()), part.map((x) => x.ident), part.map((x) => x.data)],
      );
      await client.query('commit');
      insertMs += performance.now() - t0;
    };
    const viaCopy = async (part: typeof rows) => {
      const t0 = performance.now();
      await client.query('begin');
      const text = part.map((x) => `${uuidv7()}\t${tableId}\t${team.teamId}\t${copyValue(x.ident)}\t${copyValue(x.data)}\n`).join('');
      const stream = client.query(copyFrom(`copy ${tables.chunkCopy} ${COPY_COLUMNS} from stdin`));
      await pipeline(Readable.from([text]), stream);
      await client.query('commit');
      chunkCopyMs += performance.now() - t0;
    };
    for (let from = 0; from < rows.length; from += chunkRows) {
      const part = rows.slice(from, from + chunkRows);
      if (chunks % 2 === 0) {
        await viaUnnest(part);
        await viaCopy(part);
      } else {
        await viaCopy(part);
        await viaUnnest(part);
      }
      chunks++;
    }
    return { copyS: copy.ms / 1000, insertS: insertMs / 1000, chunkCopyS: chunkCopyMs / 1000, chunks };
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  } finally {
    for (const t of Object.values(tables)) await client.query(`drop table if exists ${t}`).catch(() => {});
    client.release();
    rmSync(copyFile.path, { force: true });
  }
}

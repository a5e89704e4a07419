import { uuidv7 } from '@platform/db';
import { MAX_BULK_OPERATIONS } from '@platform/jobs';
import { averageRowBytes, BENCH_FIELDS, insertOps, rowData } from '../lib/rows';
import type { BenchModule } from '../lib/types';

const ROWS = 100_000;
/** The status quo's statement size: multi-row INSERTs of this many rows, all in one transaction. */
const INLINE_BATCH = 1_000;

/**
 * A 100,000-insert bulk write through the platform, timed from the start of the POST to the job
 * seen completed in the history (worker process at its default settings), against the inline
 * status quo: the same inserts from a script, in ONE transaction of multi-row INSERTs of 1,000
 * rows. Also reports the longest chunk transaction (job_chunks.duration_ms), the longest
 * transaction the platform held, against the status quo's single one.
 */
export const bulkWriteThroughput: BenchModule = {
  name: 'bulk-write-throughput',
  description: `one ${ROWS.toLocaleString('en-US')}-insert bulk write through API + worker vs the inline single-transaction INSERTs`,
  async run(ctx) {
    if (ROWS > MAX_BULK_OPERATIONS) throw new Error(`the API takes at most ${MAX_BULK_OPERATIONS} operations`);
    const team = await ctx.newTeam('bench: bulk write throughput');
    const project = await team.createProject('bulk write throughput');
    const platformTable = await team.createTable(project.id, 'posts via platform', BENCH_FIELDS);
    const inlineTable = await team.createTable(project.id, 'posts inline', BENCH_FIELDS);
    const rowBytes = averageRowBytes();

    // --- the platform: POST → 202 → worker → completed ----------------------------------------
    const body = JSON.stringify({ operations: insertOps('r', ROWS) });
    ctx.log(`bulk-write-throughput: POSTing ${ROWS.toLocaleString('en-US')} operations (${(Buffer.byteLength(body) / 1024 / 1024).toFixed(1)} MiB)`);
    const started = performance.now();
    const job = await team.bulkWrite(platformTable.id, body);
    const accepted = performance.now();
    const ended = await ctx.waitJobsEnded([job.id], { timeoutMs: 270_000, intervalMs: 100 });
    const platformS = (ended.at - started) / 1000;
    const jobRow = (
      await ctx.pg.query<{ status: string; error: unknown; result: { inserted?: number } | null; queued_s: number; run_s: number }>(
        `select status::text, error, result,
                extract(epoch from started_at - created_at)::float8 as queued_s,
                extract(epoch from finished_at - started_at)::float8 as run_s
         from jobs where id = $1`,
        [job.id],
      )
    ).rows[0]!;
    if (jobRow.status !== 'completed') throw new Error(`the bulk write ended ${jobRow.status}: ${JSON.stringify(jobRow.error)}`);
    if (jobRow.result?.inserted !== ROWS) throw new Error(`the bulk write reports ${JSON.stringify(jobRow.result)}, expected ${ROWS} inserts`);
    const chunks = (
      await ctx.pg.query<{ n: number; data: number; min_rows: number; max_rows: number; leases: number; max_ms: number; p50_ms: number; validate_s: number }>(
        `select count(*)::int as n,
                count(*) filter (where c.rows > 0)::int as data,
                min(c.rows) filter (where c.rows > 0)::int as min_rows,
                max(c.rows)::int as max_rows,
                count(distinct c.lease)::int as leases,
                max(c.duration_ms)::int as max_ms,
                (percentile_disc(0.5) within group (order by c.duration_ms) filter (where c.rows > 0))::int as p50_ms,
                extract(epoch from min(c.committed_at) - j.started_at)::float8 as validate_s
         from job_chunks c join jobs j on j.id = c.job_id where c.job_id = $1 group by j.started_at`,
        [job.id],
      )
    ).rows[0]!;
    const written = (
      await ctx.pg.query<{ n: number }>('select count(*)::int as n from cms_rows where table_id = $1 and deleted_at is null', [platformTable.id])
    ).rows[0]!.n;
    if (written !== ROWS) throw new Error(`the table holds ${written} rows after the job, expected ${ROWS}`);

    // --- the status quo: one transaction, INSERT … VALUES of 1,000 rows at a time --------------
    const batches: { text: string; values: unknown[] }[] = [];
    for (let from = 0; from < ROWS; from += INLINE_BATCH) {
      const n = Math.min(INLINE_BATCH, ROWS - from);
      const values: unknown[] = [];
      const tuples: string[] = [];
      for (let k = 0; k < n; k++) {
        const p = values.length;
        tuples.push(`($${p + 1}, $${p + 2}, $${p + 3}, $${p + 4}, $${p + 5})`);
        values.push(uuidv7(), inlineTable.id, team.teamId, `r-${from + k}`, JSON.stringify(rowData(from + k)));
      }
      batches.push({ text: `insert into cms_rows (id, table_id, team_id, identifier, draft_data) values ${tuples.join(', ')}`, values });
    }
    ctx.log(`bulk-write-throughput: inline baseline, ${batches.length} INSERTs in one transaction`);
    const client = await ctx.pg.connect();
    let inlineS: number;
    try {
      const t0 = performance.now();
      await client.query('begin');
      try {
        for (const b of batches) await client.query(b.text, b.values);
        await client.query('commit');
      } catch (err) {
        await client.query('rollback').catch(() => {});
        throw err;
      }
      inlineS = (performance.now() - t0) / 1000;
    } finally {
      client.release();
    }

    const rate = (s: number) => ROWS / s;
    return [
      {
        bench: 'bulk-write 100k inserts',
        platform: { value: rate(platformS), unit: 'rows/s' },
        baseline: { value: rate(inlineS), unit: 'rows/s' },
        better: 'higher',
        note:
          `${platformS.toFixed(1)} s vs ${inlineS.toFixed(1)} s; rows ~${rowBytes.toFixed(0)} B JSON; ` +
          `202 after ${((accepted - started) / 1000).toFixed(1)} s, queued ${jobRow.queued_s.toFixed(1)} s, ` +
          `validation ${chunks.validate_s.toFixed(1)} s, run ${jobRow.run_s.toFixed(1)} s`,
      },
      {
        bench: 'bulk-write longest tx',
        platform: { value: chunks.max_ms, unit: 'ms' },
        baseline: { value: inlineS * 1000, unit: 'ms' },
        better: 'lower',
        note:
          `${chunks.n} chunk transactions (${chunks.data} writing ${chunks.min_rows.toLocaleString('en-US')}–${chunks.max_rows.toLocaleString('en-US')} rows + ${chunks.n - chunks.data} checkpoint-only` +
          `${chunks.leases > 1 ? `, over ${chunks.leases} runs` : ''}; WORKER_CHUNK_SIZE ${ctx.worker.chunkSize.toLocaleString('en-US')}), ` +
          `median ${chunks.p50_ms} ms; inline: 1 transaction of ${batches.length} INSERTs`,
      },
    ];
  },
};

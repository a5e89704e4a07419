import { BIG_FIELDS, measureImport, millionImport, millionImportStarted, ndjsonFile, type ImportRun, type RssSummary } from '../lib/big-data';
import type { BenchModule } from '../lib/types';

const SMALL = 250_000;
const LIMIT_MIB = 256;

/**
 * Issue 3 (3): the worker process's peak resident memory during an NDJSON import of 250,000 rows
 * and during one of 1,000,000 rows (mode=insert, onError=abort; the 1M import is the one import-1m
 * reports, run once per run). VmRSS of the worker (this run's child process running
 * apps/worker/src/main.ts, found through /proc) is sampled every 100 ms from the first byte of the
 * upload to the job's end; VmHWM, reset before each import, gives the exact peak between samples.
 * Targets: ≤ 256 MiB, and no more for 1M rows than for 250k (the memory must not grow with the file).
 *
 * The 250k import runs first, so the 1M import starts from whatever the 250k one left: memory
 * that grows with the file shows as a larger 1M peak. (When the 1M import already ran earlier in
 * this run, the order is the other way round and the note says so.)
 */
export const workerRss: BenchModule = {
  name: 'worker-rss',
  description: `worker peak RSS during NDJSON imports of ${SMALL.toLocaleString('en-US')} and 1,000,000 rows (target ≤ ${LIMIT_MIB} MiB, 1M ≤ 250k)`,
  async run(ctx) {
    const reversed = millionImportStarted(ctx);
    const file = await ndjsonFile(SMALL);
    const team = await ctx.newTeam('bench: worker rss 250k');
    const project = await team.createProject('worker rss');
    const table = await team.createTable(project.id, 'posts 250k', BIG_FIELDS);
    let small: ImportRun;
    let big: ImportRun;
    if (reversed) {
      big = (await millionImport(ctx, 'worker-rss')).run;
      small = await measureImport(ctx, team, table.id, file, 'worker-rss (250k import)');
    } else {
      small = await measureImport(ctx, team, table.id, file, 'worker-rss (250k import)');
      big = (await millionImport(ctx, 'worker-rss')).run;
    }
    const s = small.worker;
    const b = big.worker;
    const peak = (r: RssSummary) => Math.max(r.peakMb, r.hwmMb ?? 0);
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    const growth = peak(b) - peak(s);
    return [
      {
        bench: 'worker-rss 250k import',
        platform: { value: s.peakMb, unit: 'MiB' },
        baseline: { value: s.startMb, unit: 'MiB' },
        better: 'lower',
        note:
          `peak sampled RSS vs the same worker's RSS just before the upload; target ≤ ${LIMIT_MIB} MiB ${verdict(peak(s) <= LIMIT_MIB)}. ` +
          describe(s, small) +
          `; API peak ${small.api.peakMb.toFixed(0)} MiB (from ${small.api.startMb.toFixed(0)}) while receiving the upload`,
      },
      {
        bench: 'worker-rss 1M import',
        platform: { value: b.peakMb, unit: 'MiB' },
        baseline: { value: s.peakMb, unit: 'MiB' },
        better: 'lower',
        note:
          `peak sampled RSS vs the 250k import's peak; targets ≤ ${LIMIT_MIB} MiB ${verdict(peak(b) <= LIMIT_MIB)}, ` +
          `1M ≤ 250k ${verdict(growth <= Math.max(8, peak(s) * 0.03))} (${growth >= 0 ? '+' : ''}${growth.toFixed(0)} MiB by VmHWM/samples, ±3% or 8 MiB counted as equal). ` +
          describe(b, big) +
          (reversed ? '; NB the 1M import ran earlier in this run, before the 250k one' : '; run after the 250k import'),
      },
    ];
  },
};

function describe(r: RssSummary, run: ImportRun): string {
  const phases = Object.entries(r.byLabel)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return (
    `Peak in ${r.peakLabel} (RssAnon ${r.peakAnonMb.toFixed(0)} + RssFile ${r.peakFileMb.toFixed(0)} MiB)` +
    (r.hwmMb !== null ? `, VmHWM ${r.hwmMb.toFixed(0)} MiB` : '') +
    `; rose ${(r.peakMb - r.startMb).toFixed(0)} MiB from ${r.startMb.toFixed(0)}; per phase (MiB): ${phases}; ${r.samples} samples over ${run.seconds.toFixed(0)} s; ` +
    `chunks up to ${run.validate.maxRows.toLocaleString('en-US')} rows validating, ${run.write.maxRows.toLocaleString('en-US')} writing (the sizer's, on the chunk-time budget)`
  );
}

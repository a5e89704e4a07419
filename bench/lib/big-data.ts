import { createReadStream, createWriteStream, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { uuidv7 } from '@platform/db';
import { copyValue } from '../../packages/jobs/src/cms/copy-in';
import type { TeamClient } from './api';
import { rowData } from './rows';
import { sleep } from './stats';
import type { BenchContext } from './types';

/**
 * What the big-file benchmarks (import-1m, export-1m, worker-rss) share: the generated NDJSON
 * files (made once per run, removed when the process exits), the conversion of such a file to the
 * columns of cms_rows for a raw COPY, the streamed upload, a job watcher that reads the chunk
 * timeline, the worker's resident memory, and the 1,000,000-row import itself, run once per run
 * and reused by whichever of those benchmarks comes next.
 */

const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MILLION = 1_000_000;

// --- data files --------------------------------------------------------------------------------

let dataDir: string | undefined;
function scratchDir(): string {
  if (!dataDir) {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'platform-bench-data-'));
    const dir = dataDir;
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return dataDir;
}

export interface DataFile {
  path: string;
  rows: number;
  bytes: number;
}

const ndjsonFiles = new Map<number, Promise<DataFile>>();

/**
 * An NDJSON import file of `rows` rows: `{"identifier":"r-<n>", …rowData(n)}` per line, about
 * 330 bytes each. Made once per process and size, on disk (the upload streams it from there).
 */
export function ndjsonFile(rows: number): Promise<DataFile> {
  let p = ndjsonFiles.get(rows);
  if (!p) {
    p = (async () => {
      const file = path.join(scratchDir(), `rows-${rows}.ndjson`);
      await pipeline(
        (function* () {
          const BATCH = 5_000;
          for (let from = 0; from < rows; from += BATCH) {
            let s = '';
            for (let i = from; i < Math.min(rows, from + BATCH); i++) s += `${JSON.stringify({ identifier: `r-${i}`, ...rowData(i) })}\n`;
            yield s;
          }
        })(),
        createWriteStream(file),
      );
      return { path: file, rows, bytes: statSync(file).size };
    })();
    ndjsonFiles.set(rows, p);
  }
  return p;
}


export const COPY_COLUMNS = '(id, table_id, team_id, identifier, draft_data)';

/**
 * The same rows as `source`, converted to the columns COPY_COLUMNS of cms_rows as the importer
 * stores them (the object less `identifier` and `id` is the draft; ids are UUIDv7 as the platform
 * makes them), in COPY's text format. Not timed: the baseline is the database's own bulk load.
 */
export async function copyFileFor(source: DataFile, tableId: string, teamId: string): Promise<DataFile> {
  const file = path.join(scratchDir(), `copy-${tableId}.tsv`);
  const lines = readline.createInterface({ input: createReadStream(source.path, { highWaterMark: 1 << 20 }), crlfDelay: Infinity });
  let rows = 0;
  await pipeline(
    (async function* () {
      let s = '';
      for await (const line of lines) {
        if (line === '') continue;
        const { identifier, id: _id, ...data } = JSON.parse(line) as Record<string, unknown>;
        s += `${uuidv7()}\t${tableId}\t${teamId}\t${copyValue(String(identifier))}\t${copyValue(JSON.stringify(data))}\n`;
        rows++;
        if (s.length > 1 << 20) {
          yield s;
          s = '';
        }
      }
      if (s) yield s;
    })(),
    createWriteStream(file),
  );
  return { path: file, rows, bytes: statSync(file).size };
}

/** `COPY <target> (columns) FROM STDIN` of a file made by copyFileFor, in one statement (one transaction). */
export async function copyIn(client: pg.PoolClient, target: string, file: DataFile): Promise<{ ms: number; rows: number }> {
  const t0 = performance.now();
  const stream = client.query(copyFrom(`copy ${target} ${COPY_COLUMNS} from stdin`));
  await pipeline(createReadStream(file.path, { highWaterMark: 1 << 20 }), stream);
  return { ms: performance.now() - t0, rows: Number(stream.rowCount ?? 0) };
}

/**
 * Where both sides of a read benchmark (a COPY's output, a download) write: /dev/null, through a
 * 1 MiB buffer as a client saving a file would have. With the stream's default 16 KiB, every 64
 * KiB socket read paused the socket until its write came back from the thread pool, and a
 * download, which runs as fast as its client reads, took 1.0–1.5 s for 300 MiB in this process
 * against 0.3–0.5 s for curl.
 */
function devNull() {
  return createWriteStream('/dev/null', { highWaterMark: 1 << 20 });
}

/** `COPY (query) TO STDOUT` streamed to /dev/null; returns the time and bytes. */
export async function copyOutToNull(client: pg.ClientBase, sql: string): Promise<{ ms: number; bytes: number }> {
  const t0 = performance.now();
  const counter = byteCounter();
  await pipeline(client.query(copyTo(sql)), counter.stream, devNull());
  return { ms: performance.now() - t0, bytes: counter.bytes() };
}

export function byteCounter(): { stream: Transform; bytes(): number } {
  let n = 0;
  return {
    stream: new Transform({
      transform(chunk: Buffer, _e, cb) {
        n += chunk.length;
        cb(null, chunk);
      },
    }),
    bytes: () => n,
  };
}

// --- HTTP --------------------------------------------------------------------------------------

/** POSTs a file as the request body, streamed from disk (never held in memory), and reads the answer. */
export function uploadFile(
  url: string,
  token: string,
  file: DataFile,
  contentType: string,
  signal?: AbortSignal,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      signal,
      headers: { authorization: `Bearer ${token}`, 'content-type': contentType, 'content-length': String(file.bytes) },
    });
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: kept as text
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    // An early answer (an error) ends the upload; the answer is what counts then.
    pipeline(createReadStream(file.path, { highWaterMark: 1 << 20 }), req).catch(() => {});
  });
}

/** GETs a URL and streams the body to /dev/null. */
export async function downloadToNull(url: string, token: string, signal?: AbortSignal): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { signal, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const counter = byteCounter();
      pipeline(res, counter.stream, devNull()).then(
        () => resolve({ status: res.statusCode ?? 0, bytes: counter.bytes() }),
        reject,
      );
    });
    req.on('error', reject);
  });
}

// --- the apps' processes and their memory -----------------------------------------------------

/**
 * The pid of one of the platform's apps started by this run: a child of this process (the harness
 * spawns the apps itself) whose working directory is `apps/<app>` of this repository and whose
 * command runs its entry file. Nothing outside this run's process tree can match.
 */
export function appPid(app: 'worker' | 'api', entry = app === 'worker' ? 'src/main.ts' : 'src/server.ts'): number {
  const dir = realpathSync(path.join(ROOT_DIR, 'apps', app));
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      if (!readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(entry)) continue;
      if (realpathSync(readlinkSync(`/proc/${name}/cwd`)) !== dir) continue;
      found.push(Number(name));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  if (found.length !== 1) throw new Error(`expected one ${app} process among this run's children, found ${found.length}`);
  return found[0]!;
}

export interface MemStatus {
  rssKb: number;
  anonKb: number;
  fileKb: number;
  /** VmHWM: the peak RSS since the process started or since resetPeak. */
  hwmKb: number;
}

export function readMem(pid: number): MemStatus | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKb: kb('VmRSS'), anonKb: kb('RssAnon'), fileKb: kb('RssFile'), hwmKb: kb('VmHWM') };
}

/** Resets VmHWM (`5` to clear_refs): only the counter, nothing of the process. False if refused. */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface RssSummary {
  pid: number;
  samples: number;
  /** RSS when sampling started. */
  startMb: number;
  peakMb: number;
  /** RssAnon (heap, buffers) and RssFile (code, mapped files) at the peak sample. */
  peakAnonMb: number;
  peakFileMb: number;
  /** The phase (label) in which the peak was sampled. */
  peakLabel: string;
  /** Highest sample per label. */
  byLabel: Record<string, number>;
  /** VmHWM after the run, when it could be reset before: the exact peak between samples. */
  hwmMb: number | null;
}

const mb = (kb: number) => kb / 1024;

/** Samples a process's VmRSS every `intervalMs` (synchronous reads of /proc: no await in between). */
export class RssSampler {
  label = 'start';
  private timer: NodeJS.Timeout | undefined;
  private readonly first: MemStatus;
  private peak: MemStatus;
  private peakLabel = 'start';
  private readonly byLabel: Record<string, number> = {};
  private n = 0;
  private readonly hwmReset: boolean;

  constructor(
    readonly pid: number,
    intervalMs = 100,
  ) {
    const m = readMem(pid);
    if (!m) throw new Error(`cannot read /proc/${pid}/status`);
    this.first = m;
    this.peak = m;
    this.hwmReset = resetPeak(pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const m = readMem(this.pid);
    if (!m) return;
    this.n++;
    if (m.rssKb > this.peak.rssKb) {
      this.peak = m;
      this.peakLabel = this.label;
    }
    this.byLabel[this.label] = Math.max(this.byLabel[this.label] ?? 0, mb(m.rssKb));
  }

  stop(): RssSummary {
    if (this.timer) this.sample();
    clearInterval(this.timer);
    this.timer = undefined;
    const hwm = readMem(this.pid)?.hwmKb;
    return {
      pid: this.pid,
      samples: this.n,
      startMb: mb(this.first.rssKb),
      peakMb: mb(this.peak.rssKb),
      peakAnonMb: mb(this.peak.anonKb),
      peakFileMb: mb(this.peak.fileKb),
      peakLabel: this.peakLabel,
      byLabel: Object.fromEntries(Object.entries(this.byLabel).map(([k, v]) => [k, Math.round(v)])),
      hwmMb: this.hwmReset && hwm !== undefined ? mb(hwm) : null,
    };
  }
}

// --- jobs and their chunk timelines ------------------------------------------------------------

export interface JobTimes {
  status: string;
  error: unknown;
  result: any;
  attempts: number;
  /** Seconds from acceptance (created_at) to the first claim, and of the run(s). */
  queuedS: number;
  runS: number;
  startedMs: number;
  finishedMs: number;
}

export interface ChunkRow {
  seq: number;
  lease: number;
  rows: number;
  /** By PostgreSQL's clock: BEGIN to the checkpoint statement, which the COMMIT follows in the same query. */
  durationMs: number;
  /** As the worker timed it, to the COMMIT's answer (null when not recorded). */
  workerMs: number | null;
  /** committed_at is now() inside the chunk's transaction: the time of its BEGIN. */
  beginMs: number;
}

export async function jobTimes(db: Pick<pg.Pool, 'query'>, jobId: string): Promise<JobTimes> {
  const r = await db.query<{ status: string; error: unknown; result: unknown; attempts: number; queued_s: number; run_s: number; started_ms: number; finished_ms: number }>(
    `select status::text, error, result, attempts,
            extract(epoch from started_at - created_at)::float8 as queued_s,
            extract(epoch from finished_at - started_at)::float8 as run_s,
            extract(epoch from started_at)::float8 * 1000 as started_ms,
            extract(epoch from finished_at)::float8 * 1000 as finished_ms
     from jobs where id = $1`,
    [jobId],
  );
  const j = r.rows[0];
  if (!j) throw new Error(`job ${jobId} is not in the history`);
  return { status: j.status, error: j.error, result: j.result, attempts: j.attempts, queuedS: j.queued_s, runS: j.run_s, startedMs: j.started_ms, finishedMs: j.finished_ms };
}

export async function chunkRows(db: Pick<pg.Pool, 'query'>, jobId: string): Promise<ChunkRow[]> {
  const r = await db.query<{ seq: number; lease: number; rows: number; duration_ms: number; worker_ms: number | null; begin_ms: number }>(
    `select seq, lease, rows, duration_ms, worker_ms, extract(epoch from committed_at)::float8 * 1000 as begin_ms
     from job_chunks where job_id = $1 order by seq`,
    [jobId],
  );
  return r.rows.map((c) => ({ seq: c.seq, lease: c.lease, rows: c.rows, durationMs: c.duration_ms, workerMs: c.worker_ms, beginMs: c.begin_ms }));
}

export interface PhaseStats {
  chunks: number;
  /** Chunks that carried rows (the others only moved the checkpoint). */
  dataChunks: number;
  rows: number;
  minRows: number;
  maxRows: number;
  maxMs: number;
  /** The longest chunk as the worker timed it (ChunkRow.workerMs), 0 when none was recorded. */
  maxWorkerMs: number;
  p50Ms: number;
  /** Sum of the chunk transactions (PostgreSQL's clock). */
  txS: number;
  /** From the phase's start to its last chunk's end (BEGIN + duration). */
  wallS: number;
}

export function phaseStats(chunks: ChunkRow[], startMs: number): PhaseStats {
  const data = chunks.filter((c) => c.rows > 0);
  const ms = data.map((c) => c.durationMs).sort((a, b) => a - b);
  const last = chunks.at(-1);
  return {
    chunks: chunks.length,
    dataChunks: data.length,
    rows: data.reduce((a, c) => a + c.rows, 0),
    minRows: data.length ? Math.min(...data.map((c) => c.rows)) : 0,
    maxRows: data.length ? Math.max(...data.map((c) => c.rows)) : 0,
    maxMs: chunks.length ? Math.max(...chunks.map((c) => c.durationMs)) : 0,
    maxWorkerMs: Math.max(0, ...chunks.map((c) => c.workerMs ?? 0)),
    p50Ms: ms.length ? ms[Math.ceil(ms.length / 2) - 1]! : 0,
    txS: chunks.reduce((a, c) => a + c.durationMs, 0) / 1000,
    wallS: last ? (last.beginMs + last.durationMs - startMs) / 1000 : 0,
  };
}

/**
 * Watches one job until it ends, every `intervalMs`, naming what it is doing for the RSS sampler
 * (`queued`, `validate`, `write`, `finalize` once the write pass has read the whole file). Resolves
 * with the moment (performance.now()) it was first seen ended.
 */
export async function watchJob(
  ctx: BenchContext,
  jobId: string,
  opts: { timeoutMs: number; intervalMs?: number; onPhase?: (phase: string) => void },
): Promise<{ at: number; status: string }> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const r = await ctx.pg.query<{ status: string; phase: string | null; eof: boolean | null }>(
      `select status::text, checkpoint->>'phase' as phase, (checkpoint->>'eof')::boolean as eof from jobs where id = $1`,
      [jobId],
    );
    const at = performance.now();
    const j = r.rows[0];
    if (j && !['queued', 'active'].includes(j.status)) return { at, status: j.status };
    if (j) {
      const phase = j.status === 'queued' ? 'queued' : j.phase === 'write' && j.eof ? 'finalize' : j.phase === 'finalize' ? 'finalize' : (j.phase ?? 'starting');
      opts.onPhase?.(phase);
    }
    if (Date.now() > deadline) throw new Error(`job ${jobId} did not end within ${opts.timeoutMs / 1000} s (${j?.status ?? 'not found'})`);
    await sleep(opts.intervalMs ?? 100, ctx.signal);
  }
}

/**
 * Before a timed bulk load (not timed): VACUUM ANALYZE of the tables earlier loads filled, so no
 * autovacuum of them runs during the measurement, then a CHECKPOINT, so the earlier work's dirty
 * pages are not written during it. Done before the platform's import and before the COPY alike.
 */
export async function quiesce(ctx: BenchContext): Promise<void> {
  await ctx.pg.query('vacuum (analyze) cms_rows');
  await ctx.pg.query('checkpoint').catch(() => {}); // needs superuser or pg_checkpoint: best effort
}

// --- one import through the platform, measured -------------------------------------------------

export interface ImportRun {
  jobId: string;
  rows: number;
  bytes: number;
  /** First byte of the upload to the job seen completed. */
  seconds: number;
  /** First byte of the upload to the 202. */
  uploadS: number;
  job: JobTimes;
  chunks: ChunkRow[];
  leases: number;
  validate: PhaseStats;
  write: PhaseStats;
  /** After the last chunk: dropping the identifier claims, deleting the file, completing the job. */
  finalizeS: number;
  worker: RssSummary;
  api: RssSummary;
  /** Rows `cms_rows` held when the upload began (every table's, live or not): the indexes the import writes into. */
  tableRowsBefore: number;
}

/**
 * Uploads `file` to `POST /v1/cms-tables/:tableId/imports` (NDJSON, mode=insert, onError=abort),
 * streamed from disk, and waits for the job to end, sampling the worker's and the API's RSS
 * every 100 ms. Throws unless the job completed with every row inserted.
 */
export async function measureImport(ctx: BenchContext, team: TeamClient, tableId: string, file: DataFile, label: string): Promise<ImportRun> {
  await quiesce(ctx);
  const tableRowsBefore = (await ctx.pg.query<{ n: number }>('select count(*)::int as n from cms_rows')).rows[0]!.n;
  const worker = new RssSampler(appPid('worker'));
  const api = new RssSampler(appPid('api'));
  worker.label = api.label = 'upload';
  let workerRss: RssSummary;
  let apiRss: RssSummary;
  let started: number;
  let accepted: number;
  let ended: { at: number; status: string };
  let jobId: string;
  try {
    ctx.log(`${label}: uploading ${file.rows.toLocaleString('en-US')} rows (${(file.bytes / 2 ** 20).toFixed(0)} MiB of NDJSON)`);
    started = performance.now();
    const res = await uploadFile(
      `${ctx.apiUrl}/v1/cms-tables/${tableId}/imports?mode=insert&onError=abort`,
      team.token,
      file,
      'application/x-ndjson',
      ctx.signal,
    );
    accepted = performance.now();
    if (res.status !== 202) throw new Error(`the import upload answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`);
    jobId = res.body.id as string;
    ctx.log(`${label}: 202 after ${((accepted - started) / 1000).toFixed(1)} s, job ${jobId}`);
    ended = await watchJob(ctx, jobId, {
      timeoutMs: 900_000,
      onPhase: (p) => {
        worker.label = api.label = p;
      },
    });
  } finally {
    workerRss = worker.stop();
    apiRss = api.stop();
  }
  const job = await jobTimes(ctx.pg, jobId);
  if (job.status !== 'completed') throw new Error(`${label}: the import ended ${job.status}: ${JSON.stringify(job.error).slice(0, 300)}`);
  if (job.result?.inserted !== file.rows) throw new Error(`${label}: the import reports ${JSON.stringify(job.result)}, expected ${file.rows} inserted`);
  const chunks = await chunkRows(ctx.pg, jobId);

  // The validate pass is the chunks up to the whole file counted, and the checkpoint-only chunk
  // that turns the pass; the write pass starts with the next chunk that carries rows.
  let cum = 0;
  let split = chunks.length;
  for (let i = 0; i < chunks.length; i++) {
    if (cum >= file.rows && chunks[i]!.rows > 0) {
      split = i;
      break;
    }
    cum += chunks[i]!.rows;
  }
  const validateChunks = chunks.slice(0, split);
  const writeChunks = chunks.slice(split);
  const validate = phaseStats(validateChunks, job.startedMs);
  const validateEnd = job.startedMs + validate.wallS * 1000;
  const write = phaseStats(writeChunks, validateEnd);
  const last = chunks.at(-1);
  const finalizeS = last ? (job.finishedMs - (last.beginMs + last.durationMs)) / 1000 : 0;
  return {
    jobId,
    rows: file.rows,
    bytes: file.bytes,
    seconds: (ended.at - started) / 1000,
    uploadS: (accepted - started) / 1000,
    job,
    chunks,
    leases: new Set(chunks.map((c) => c.lease)).size,
    validate,
    write,
    finalizeS,
    worker: workerRss,
    api: apiRss,
    tableRowsBefore,
  };
}

// --- the million-row import, once per run ------------------------------------------------------

export interface MillionImport {
  team: TeamClient;
  tableId: string;
  run: ImportRun;
  /** Which benchmark ran it (the others reuse it). */
  ranBy: string;
}

const millions = new WeakMap<BenchContext, Promise<MillionImport>>();

export const BIG_FIELDS = [
  { name: 'title', type: 'text' as const, required: true },
  { name: 'body', type: 'text' as const },
  { name: 'views', type: 'number' as const },
  { name: 'featured', type: 'boolean' as const },
];

/** The 1,000,000-row import through the platform: run by the first benchmark that asks, reused after. */
export function millionImport(ctx: BenchContext, askedBy: string): Promise<MillionImport> {
  let p = millions.get(ctx);
  if (!p) {
    p = (async () => {
      const file = await ndjsonFile(MILLION);
      const team = await ctx.newTeam('bench: 1M import');
      const project = await team.createProject('1M import');
      const table = await team.createTable(project.id, 'posts 1M', BIG_FIELDS);
      const run = await measureImport(ctx, team, table.id, file, `${askedBy} (1M import)`);
      return { team, tableId: table.id, run, ranBy: askedBy };
    })();
    millions.set(ctx, p);
  }
  return p;
}

/** Whether the million-row import has already been run (or started) in this run. */
export function millionImportStarted(ctx: BenchContext): boolean {
  return millions.has(ctx);
}

// --- formatting ------------------------------------------------------------------------------

export const s1 = (s: number) => `${s.toFixed(1)} s`;
export const pct = (part: number, whole: number) => `${Math.round((part / whole) * 100)}%`;
export const rate = (rows: number, s: number) => `${Math.round(rows / s).toLocaleString('en-US')} rows/s`;

import { startIpcChild } from './ipc-child';

/**
 * The client of the read benchmarks (the export's download, the baseline's `COPY … TO STDOUT`) in
 * a process of its own, started before anything is timed: both sides' bytes arrive in a small
 * process with nothing else to do, as in a user's curl or psql. In the bench process, which by
 * then holds the whole run's state (samples, pools, timers of the benchmarks before), the same
 * 300 MiB download took 1.0–1.5 s in full runs against 0.6 s in an export-only run, the bench
 * process using 45–59 % of the machine for it.
 *
 * Each request runs alone (the benchmarks await one before the next); the child replies with its
 * own timing, bytes and status, or the error's message.
 */
export interface ReadClient {
  /** GET with the team's token, the body streamed to /dev/null. */
  download(url: string, token: string): Promise<{ status: number; bytes: number; ms: number }>;
  /** `COPY (…) TO STDOUT` on the child's one session, streamed to /dev/null. */
  copyOut(sql: string): Promise<{ ms: number; bytes: number }>;
  /** Any other statement on that session (a `set`, an `explain`): its rows. */
  query<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  close(): Promise<void>;
}

export type ReadRequest = { kind: 'download'; url: string; token: string } | { kind: 'copy'; sql: string } | { kind: 'query'; sql: string };

/** What the CPU sampler looks for in a process's command line to name it. */
export const READ_CLIENT_ENTRY = 'bench/lib/read-client-main.ts';

/** Starts the client (it connects to PostgreSQL first); `signal` (Ctrl+C) kills it, failing what it was doing. */
export async function startReadClient(databaseUrl: string, signal?: AbortSignal, readyMs = 60_000): Promise<ReadClient> {
  const child = await startIpcChild<ReadRequest>(READ_CLIENT_ENTRY, 'read client', { READ_CLIENT_DATABASE_URL: databaseUrl }, signal, readyMs);
  return {
    download: (url, token) => child.ask({ kind: 'download', url, token }),
    copyOut: (sql) => child.ask({ kind: 'copy', sql }),
    query: (sql) => child.ask({ kind: 'query', sql }),
    close: () => child.close(),
  };
}

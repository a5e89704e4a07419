import { startIpcChild } from './ipc-child';

/**
 * The studio's interactive traffic for `interactive-latency`, generated in a process of its own:
 * an open loop of reads through the API and direct editor saves (see load-client-main.ts). Each
 * latency is taken from the request's scheduled time, so a pause of the generator's process counts
 * as latency: in the bench process, which by the time `interactive-latency` runs in a full
 * `npm run bench` holds the run's state (and then held a million row ids, and scanned /proc for the
 * CPU figures at every change of window), the generator ran up to 44–106 ms late in full runs
 * against 14 ms in a run of that bench alone.
 *
 * The bench moves the machine between states (`setState`): every request is counted in the state
 * it was scheduled in, by its scheduled time, and a read also by when in its window it was
 * scheduled. Errors count in the state current when the request was sent.
 */

/** Ids made of a 24-character prefix and 12 hex digits 1…count, as the bench seeds them. */
export interface IdSet {
  prefix: string;
  count: number;
}

/** The `k`-th id of the set, from 0. */
export function idAt(set: IdSet, k: number): string {
  return `${set.prefix}${(k + 1).toString(16).padStart(12, '0')}`;
}

export function randomId(set: IdSet): string {
  return idAt(set, Math.floor(Math.random() * set.count));
}

/** What one state's requests got. */
export interface LoadWindow {
  read: number[];
  /** Every read: when it was scheduled from the start of its window (the n-th of its state, from 0), and its latency (ms). */
  readAt: { offset: number; ms: number; window: number }[];
  save: number[];
  errors: number;
  firstError?: string;
}

export interface LoadRun {
  windows: Record<string, LoadWindow>;
  /** Largest lateness of the generator itself (a send after its scheduled time), ms. */
  lag: number;
}

export interface LoadConfig {
  apiUrl: string;
  token: string;
  databaseUrl: string;
  /** Reads are `GET /v1/cms-tables/<readTable>/rows/<a random id of reads>`. */
  readTable: string;
  reads: IdSet;
  /** One request every `intervalMs`; every `saveEvery`-th is a save, the others reads. */
  intervalMs: number;
  saveEvery: number;
  /** The editor's connections (application_name studio-editor). */
  editorPool: number;
}

export type LoadRequest = { kind: 'run'; saves: IdSet; maxMs: number } | { kind: 'state'; state: string } | { kind: 'stop' };

export interface LoadClient {
  /** Requests scheduled from now on count in `state`. */
  setState(state: string): void;
  /** Runs the open loop, the editor saving random rows of `saves`, until `stop` or `maxMs`; then waits for the answers. */
  run(saves: IdSet, maxMs: number): Promise<LoadRun>;
  stop(): void;
  close(): Promise<void>;
}

/** What the CPU sampler looks for in a process's command line to name it. */
export const LOAD_CLIENT_ENTRY = 'bench/lib/load-client-main.ts';

export async function startLoadClient(config: LoadConfig, signal?: AbortSignal): Promise<LoadClient> {
  const child = await startIpcChild<LoadRequest>(LOAD_CLIENT_ENTRY, 'load generator', { LOAD_CONFIG: JSON.stringify(config) }, signal);
  // A failed state change or stop shows as the run's failure (the child is gone).
  const tell = (req: LoadRequest) => void child.ask(req).catch(() => {});
  return {
    setState: (state) => tell({ kind: 'state', state }),
    run: (saves, maxMs) => child.ask<LoadRun>({ kind: 'run', saves, maxMs }),
    stop: () => tell({ kind: 'stop' }),
    close: () => child.close(),
  };
}

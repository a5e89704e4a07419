import type { Database } from '@platform/db';
import type { BlobStore } from './blob-store';
import type { JobRun } from './chunk-runner';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** What a processor gets: its run (lease, checkpoint, chunk commits), the parsed payload and the stores. */
export interface ProcessorContext<P> {
  run: JobRun<any>;
  payload: P;
  jobId: string;
  teamId: string;
  database: Database;
  /** A read replica for long reads that may lag a little (exports), when one is configured. */
  replicaDatabase?: Database;
  blobs: BlobStore;
  log: Logger;
  /** Chunk size in rows or operations: chunks must commit in a fraction of a second. */
  chunkSize: number;
  /** Rows per page of a read-only pass (an export's keyset pages, read outside any transaction). */
  pageRows: number;
  /** How long a read-only pass reads pages before it checkpoints them (one sync, one commit). */
  pageChunkMs: number;
  /** Id ranges a read-only pass is cut into, read side by side while the run is `alone()`. */
  pageReaders: number;
  /** Call when the run's chunks change kind (another pass, other work per row): sizing starts over. */
  restartChunkSizing(): void;
  /**
   * Whether the run has its process to itself now. Planning a chunk while the one before commits
   * (`runChunks`' `ahead`) only pays then: beside other runs the CPU is shared anyway, and the
   * planning delays their transactions' round trips (bench worker-connections: longest chunk
   * 340 ms with it, 250 ms budget).
   */
  alone(): boolean;
}

/** Returns the job's result; may throw JobInputError (bad input), StopRun or plain errors (transient). */
export type Processor<P = any> = (ctx: ProcessorContext<P>) => Promise<unknown>;

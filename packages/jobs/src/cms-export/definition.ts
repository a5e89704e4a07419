import { z } from 'zod';
import { defineJob } from '../define-job';

export const exportPayload = z.object({
  tableId: z.uuid(),
  format: z.enum(['csv', 'ndjson']),
  published: z.boolean(),
});

export const exportJob = defineJob({
  name: 'cms.export',
  version: 1,
  queue: 'cms-export',
  payload: exportPayload,
  defaults: { attempts: 5, backoffMs: 2_000, maxRunTimeMs: 60 * 60_000 },
  // Reads only: an export never waits for the table's writers.
  lockKeys: () => [],
  workClass: () => 'bulk',
});

/** What a completed export's result says of its file. */
export interface ExportResult {
  blobKey: string;
  format: 'csv' | 'ndjson';
  rows: number;
  bytes: number;
  /**
   * When the file is kept in more than one piece (one per range the rows were read in): each
   * piece's size, in order. Piece 0 is `blobKey`, piece n is `<blobKey>.<n>`.
   */
  pieces?: number[];
}

/** The blobs that make up an export's file, in order, with the size each must have. */
export function exportPieces(result: Pick<ExportResult, 'blobKey' | 'bytes' | 'pieces'>): { key: string; bytes: number }[] {
  if (!result.pieces) return [{ key: result.blobKey, bytes: result.bytes }];
  return result.pieces.map((bytes, n) => ({ key: exportPieceKey(result.blobKey, n), bytes }));
}

export const exportPieceKey = (blobKey: string, n: number) => (n === 0 ? blobKey : `${blobKey}.${n}`);

import { z } from 'zod';
import { defineJob, tableLockKey } from '../define-job';

export const importPayload = z.object({
  tableId: z.uuid(),
  blobKey: z.string().min(1).max(200),
  format: z.enum(['csv', 'ndjson']),
  mode: z.enum(['insert', 'upsert']),
  onError: z.enum(['abort', 'skip']),
  sizeBytes: z.int().nonnegative(),
});

export const importJob = defineJob({
  name: 'cms.import',
  version: 1,
  queue: 'cms-import',
  payload: importPayload,
  defaults: { attempts: 5, backoffMs: 2_000, maxRunTimeMs: 2 * 60 * 60_000 },
  lockKeys: (p) => [tableLockKey(p.tableId)],
  workClass: () => 'bulk',
});

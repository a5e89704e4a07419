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

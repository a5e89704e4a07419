import { z } from 'zod';
import { defineJob, tableLockKey } from '../define-job';

export const MAX_IDENTIFIER_LENGTH = 256;
export const identifierSchema = z
  .string()
  .min(1)
  .max(MAX_IDENTIFIER_LENGTH)
  .refine((s) => !/[\u0000-\u001f]/.test(s), 'must not contain control characters');

const rowData = z.record(z.string(), z.unknown());
const oneRef = (o: { id?: string; identifier?: string }) => (o.id === undefined) !== (o.identifier === undefined);
const refMessage = { message: 'give exactly one of id or identifier' };

/** One operation of a bulk write, as the API accepts it and the worker reads it back. */
export const bulkOperationSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('insert'), identifier: identifierSchema.optional(), data: rowData }).strict(),
  z
    .object({ op: z.literal('update'), id: z.uuid().optional(), identifier: identifierSchema.optional(), data: rowData })
    .strict()
    .refine(oneRef, refMessage),
  z
    .object({ op: z.literal('delete'), id: z.uuid().optional(), identifier: identifierSchema.optional() })
    .strict()
    .refine(oneRef, refMessage),
]);
export type BulkOperation = z.infer<typeof bulkOperationSchema>;

export const MAX_BULK_OPERATIONS = 100_000;

export const bulkWritePayload = z.object({
  tableId: z.uuid(),
  /** Blob holding the operations as NDJSON, one per line, in request order. */
  blobKey: z.string().min(1).max(200),
  operationCount: z.int().min(1).max(MAX_BULK_OPERATIONS),
});

export const bulkWriteJob = defineJob({
  name: 'cms.bulk_write',
  version: 1,
  queue: 'cms-bulk-write',
  payload: bulkWritePayload,
  defaults: { attempts: 5, backoffMs: 1_000, maxRunTimeMs: 60 * 60_000 },
  lockKeys: (p) => [tableLockKey(p.tableId)],
  workClass: (p) => (p.operationCount <= 1_000 ? 'interactive' : 'bulk'),
});

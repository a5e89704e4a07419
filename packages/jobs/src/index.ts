// The light entry point: definitions, producer and stores. Processor code is under `./processors`.
export * from './define-job';
export * from './catalog';
export * from './queues';
export * from './producer';
export * from './connection';
export * from './blob-store';
export * from './errors';
export { jsonDeeperThan, MAX_JSON_DEPTH, validateRowData, type FieldProblem } from './cms/row-data';
export { bulkWriteJob, bulkOperationSchema, MAX_BULK_OPERATIONS, identifierSchema, MAX_IDENTIFIER_LENGTH, type BulkOperation } from './cms-bulk-write/definition';
export { importJob } from './cms-import/definition';
export { exportJob, exportPieces, type ExportResult } from './cms-export/definition';
export { publishJob } from './project-publish/definition';
export { ConnectionBudget, type ConnectionBudgetOptions } from './connection-budget';
export { readPressure, signalPressure } from './db-pressure';
export { ChunkSizer, type ChunkSizerOptions } from './chunk-sizer';
export { sweepBlobs, type JanitorOptions } from './blob-janitor';

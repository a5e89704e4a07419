// The support dashboard's queries (issue 5), and `recordJobEvent` for the worker.
export * from './job-events';
export * from './job-search';
export * from './audit-log';
export * from './queue-samples';
export * from './retention';

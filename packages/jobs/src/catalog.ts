import { bulkWriteJob } from './cms-bulk-write/definition';
import { exportJob } from './cms-export/definition';
import { importJob } from './cms-import/definition';
import { publishJob } from './project-publish/definition';
import type { JobDefinition } from './define-job';

/** Every job type, by name: the one place that lists them (API, worker and dashboard read it). */
export const jobCatalog = {
  [importJob.name]: importJob,
  [exportJob.name]: exportJob,
  [bulkWriteJob.name]: bulkWriteJob,
  [publishJob.name]: publishJob,
} as const;

export type JobName = keyof typeof jobCatalog;
export const JOB_NAMES = Object.keys(jobCatalog) as JobName[];
export const QUEUE_NAMES = [...new Set(Object.values(jobCatalog).map((d) => d.queue))];

export function jobDefinition(name: string): JobDefinition | undefined {
  return (jobCatalog as Record<string, JobDefinition>)[name];
}

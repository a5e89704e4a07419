import type { JobName } from './catalog';
import { bulkWriteProcessor } from './cms-bulk-write/processor';
import { exportProcessor } from './cms-export/processor';
import { JobInputError } from './errors';
import type { Processor } from './processor';
import { publishProcessor } from './project-publish/processor';

/** Job types whose body of work this build does not do yet: the API answers 501 before queuing them. */
const notImplemented: Processor = async () => {
  throw new JobInputError('this job type is not implemented by this build', 'not_implemented');
};

/** The worker's entry point: every job name maps to its processor, or the type check fails. */
export const processors = {
  'cms.bulk_write': bulkWriteProcessor,
  'cms.import': (ctx) => import('./cms-import/processor').then((m) => m.importProcessor(ctx)),
  'cms.export': exportProcessor,
  'project.publish': publishProcessor,
} satisfies Record<JobName, Processor>;

export { forgiveBlamelessStall, runBullJob, type RunnerDeps, type RunOutcome } from './run-job';
export { JobRun, partEnds, runChunks, type Chunk, type ChunkPart, type ChunkFault, type ChunkRunnerOptions } from './chunk-runner';
export type { Processor, ProcessorContext, Logger } from './processor';

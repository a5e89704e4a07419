import type { BenchModule } from '../lib/types';
import { bulkWriteThroughput } from './bulk-write-throughput';
import { enqueueLatency } from './enqueue-latency';
import { sameTableJobs } from './same-table-jobs';
import { smallJobs } from './small-jobs';
import { dashboardSearch } from '../dashboard-search';

/**
 * Every benchmark, in the order `npm run bench` runs them. A new one (imports, exports,
 * publishes, …) is a module in this folder returning rows, plus one line here.
 */
export const benches: BenchModule[] = [enqueueLatency, bulkWriteThroughput, smallJobs, sameTableJobs, dashboardSearch];

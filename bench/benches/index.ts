import type { BenchModule } from '../lib/types';
import { bulkWriteThroughput } from './bulk-write-throughput';
import { enqueueLatency } from './enqueue-latency';
import { sameTableJobs } from './same-table-jobs';
import { smallJobs } from './small-jobs';
import { dashboardSearch } from '../dashboard-search';
import { fairnessSmallJob } from './fairness-small-job';
import { interactiveLatency } from './interactive-latency';
import { workerConnections } from './worker-connections';
import { export1m } from './export-1m';
import { import1m } from './import-1m';
import { workerRss } from './worker-rss';

/**
 * Every benchmark, in the order `npm run bench` runs them. A new one (imports, exports,
 * publishes, …) is a module in this folder returning rows, plus one line here.
 */
export const benches: BenchModule[] = [enqueueLatency, bulkWriteThroughput, smallJobs, sameTableJobs, dashboardSearch];
benches.push(fairnessSmallJob); // issue 4
benches.push(interactiveLatency); // issue 4
benches.push(workerConnections); // issue 4
benches.push(workerRss); // issue 3: first of the three, its 250k import must come before the shared 1M import
benches.push(import1m); // issue 3
benches.push(export1m); // issue 3

import { queueSeries, type Db, type QueueSeriesPoint } from '@platform/db';

/**
 * Turns queue samples into uPlot-ready series (x in Unix seconds; null where nothing was sampled,
 * which uPlot draws as a gap). The page embeds the result as JSON; assets/charts.js draws it.
 */

export const RANGES = {
  hour: { label: 'Last hour', seconds: 3600, stepS: 10 },
  day: { label: 'Last day', seconds: 24 * 3600, stepS: 60 },
  month: { label: 'Last 30 days', seconds: 30 * 24 * 3600, stepS: 3600 },
} as const;
export type RangeName = keyof typeof RANGES;

export interface ChartSpec {
  id: string;
  title: string;
  time: boolean;
  unit?: string;
  bars?: boolean;
  x: number[];
  series: Array<{ label: string; values: Array<number | null>; color?: string }>;
}

const STATE_COLORS = { waiting: '#175cd3', active: '#067647', delayed: '#b54708', failed: '#b42318' } as const;
type State = keyof typeof STATE_COLORS;

export interface QueueCharts {
  range: RangeName;
  queue: string | null;
  charts: ChartSpec[];
  /** Samples found in the range (0: the sampler has not run yet, or is off). */
  points: number;
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}

export async function queueCharts(
  db: Db,
  opts: { range: RangeName; queue?: string | null; queues: string[]; now?: Date; idPrefix?: string; only?: Array<'depth' | 'byQueue' | 'throughput' | 'failureRate'> },
): Promise<QueueCharts> {
  const r = RANGES[opts.range];
  const now = opts.now ?? new Date();
  const end = Math.ceil(now.getTime() / 1000 / r.stepS) * r.stepS;
  const n = Math.round(r.seconds / r.stepS);
  const x = Array.from({ length: n }, (_, i) => end - (n - 1 - i) * r.stepS);
  const points = await queueSeries(db, new Date((end - n * r.stepS) * 1000), new Date(end * 1000), r.stepS);
  const index = new Map(x.map((t, i) => [t, i]));
  const byQueue = new Map<string, Array<QueueSeriesPoint | undefined>>();
  for (const q of opts.queues) byQueue.set(q, new Array(n).fill(undefined));
  for (const p of points) {
    const i = index.get(Math.round(p.at.getTime() / 1000));
    if (i === undefined) continue;
    if (!byQueue.has(p.queue)) byQueue.set(p.queue, new Array(n).fill(undefined));
    byQueue.get(p.queue)![i] = p;
  }
  const selected = opts.queue ? [opts.queue] : [...byQueue.keys()];
  const pre = opts.idPrefix ?? 'chart';
  // Sum over the selected queues at each x; null where none of them was sampled.
  const sum = (pick: (p: QueueSeriesPoint) => number) =>
    x.map((_, i) => {
      let total: number | null = null;
      for (const q of selected) {
        const p = byQueue.get(q)?.[i];
        if (p) total = (total ?? 0) + pick(p);
      }
      return total === null ? null : round(total);
    });
  const covered = sum((p) => p.coveredS);
  const completed = sum((p) => p.completedCount);
  const failed = sum((p) => p.failedCount);
  const perMinute = (counts: Array<number | null>) =>
    counts.map((c, i) => (c === null || !covered[i] ? null : round((c * 60) / (covered[i]! / Math.max(1, selected.length)))));
  const scope = opts.queue ? opts.queue : 'all queues';
  const only = new Set(opts.only ?? ['depth', 'byQueue', 'throughput', 'failureRate']);
  const charts: ChartSpec[] = [];
  if (only.has('depth')) {
    charts.push({
      id: `${pre}-depth`,
      title: `Depth by state (${scope})`,
      time: true,
      unit: 'jobs',
      x,
      series: (Object.keys(STATE_COLORS) as State[]).map((s) => ({ label: s === 'failed' ? 'failed (kept in Redis)' : s, values: sum((p) => p[s]), color: STATE_COLORS[s] })),
    });
  }
  if (only.has('byQueue') && !opts.queue) {
    charts.push({
      id: `${pre}-waiting-by-queue`,
      title: 'Waiting by queue',
      time: true,
      unit: 'jobs',
      x,
      series: [...byQueue.entries()].map(([q, ps]) => ({ label: q, values: ps.map((p) => (p ? round(p.waiting) : null)) })),
    });
  }
  if (only.has('throughput')) {
    charts.push({
      id: `${pre}-throughput`,
      title: `Throughput (${scope})`,
      time: true,
      unit: 'jobs/min',
      x,
      series: [
        { label: 'completed', values: perMinute(completed), color: '#067647' },
        { label: 'failed', values: perMinute(failed), color: '#b42318' },
      ],
    });
  }
  if (only.has('failureRate')) {
    charts.push({
      id: `${pre}-failure-rate`,
      title: `Failure rate (${scope})`,
      time: true,
      unit: '%',
      x,
      series: [
        {
          label: 'failed / ended',
          values: x.map((_, i) => {
            const c = completed[i] ?? null;
            const f = failed[i] ?? null;
            if (c === null || f === null || c + f === 0) return null;
            return round((100 * f) / (c + f));
          }),
          color: '#b42318',
        },
      ],
    });
  }
  return { range: opts.range, queue: opts.queue ?? null, charts, points: points.length };
}

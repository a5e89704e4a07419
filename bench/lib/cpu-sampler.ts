import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { LOAD_CLIENT_ENTRY } from './load-client';
import { READ_CLIENT_ENTRY } from './read-client';

/**
 * Machine-wide CPU over a window, from /proc/stat (Linux; empty elsewhere): how busy the cores
 * were, how much the hypervisor took (steal), and the mean number of runnable threads (more than
 * the cores means requests wait for a CPU). Everything on the machine counts, not only the
 * platform: on a shared machine that is the point.
 */
export interface CpuWindow {
  busyPct: number;
  /**
   * Share of the machine used by processes outside this run (the bench runs as a process-group
   * leader; the apps, PostgreSQL, Redis are in its group, PostgreSQL's backends are children of its
   * postmaster): other work on a shared machine, which makes the window's latencies not comparable.
   */
  othersPct: number;
  /** This run's share by part: worker, api, dashboard (by working folder), postgres, redis, bench, client (read-client.ts), load (load-client.ts). */
  ours: Record<string, number>;
  stealPct: number;
  /** Mean of procs_running sampled every 100 ms (the sampler's own thread included). */
  runnable: number;
}

function snapshot(): { busy: number; steal: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number) as number[];
    const busy = user! + nice! + system! + irq! + softirq!;
    return { busy, steal: steal!, total: busy + idle! + iowait! + steal! };
  } catch {
    return undefined;
  }
}

interface ProcTicks {
  ppid: number;
  pgrp: number;
  ticks: number;
  /** When it started (ticks since boot): a pid seen again with another start is another process. */
  start: number;
}

/** CPU ticks (user + system) of every process, with its process group. */
function processTicks(): Map<number, ProcTicks> {
  const out = new Map<number, ProcTicks>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after "(comm)": state ppid pgrp … utime(14) stime(15) cutime(16) cstime(17) …
      // starttime(22), counted from 1 before comm. With the CPU of children it reaped: a process that came and
      // went inside a window (PostgreSQL's parallel workers, which the postmaster reaps) counts for
      // its parent instead of for "other processes".
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(pid), {
        ppid: Number(f[1]),
        pgrp: Number(f[2]),
        ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
        start: Number(f[19]),
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const labels = new Map<number, string>();
/** What one of this run's processes is: the apps are told apart by their working folder. */
function labelOf(pid: number): string {
  let label = labels.get(pid);
  if (label) return label;
  label = 'other';
  try {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (pid === process.pid) label = 'bench';
    else if (comm.startsWith('postgres')) label = 'postgres';
    else if (comm.startsWith('redis')) label = 'redis';
    else {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes(READ_CLIENT_ENTRY)) label = 'client';
      else if (cmdline.includes(LOAD_CLIENT_ENTRY)) label = 'load';
      else {
        const cwd = readlinkSync(`/proc/${pid}/cwd`);
        const m = /apps\/(api|worker|dashboard)$/.exec(cwd);
        label = m ? m[1]! : comm;
      }
    }
  } catch {
    // gone meanwhile
  }
  labels.set(pid, label);
  return label;
}

function ownGroup(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

function runnable(): number | undefined {
  try {
    const m = /procs_running (\d+)/.exec(readFileSync('/proc/stat', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function startCpuWindow(): { stop(): CpuWindow | undefined } {
  const first = snapshot();
  const firstProcs = processTicks();
  const group = ownGroup();
  const counts: number[] = [];
  const timer = setInterval(() => {
    const n = runnable();
    if (n !== undefined) counts.push(n);
  }, 100);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      const last = snapshot();
      if (!first || !last || last.total === first.total) return undefined;
      const total = last.total - first.total;
      const ours: Record<string, number> = {};
      const procs = processTicks();
      // PostgreSQL's children put themselves in groups of their own (setsid): they are this run's
      // when their parent, the postmaster, is.
      const isOurs = (p: { ppid: number; pgrp: number }) => p.pgrp === group || procs.get(p.ppid)?.pgrp === group;
      const alive = (pid: number) => {
        const a = firstProcs.get(pid);
        return a !== undefined && procs.get(pid)?.start === a.start;
      };
      // A child reaped inside the window adds its whole life to its parent's ticks; what it had
      // used before the window (its ticks in the first snapshot) is taken off again, from the
      // nearest ancestor still alive (a parent that went too passed it on to its own). Otherwise a
      // pool's connections closing in the window (their backends busy since the benchmark before)
      // counted PostgreSQL at over 100 % of the machine. (A child whose /proc entry could not be
      // read at the first snapshot, or a parent read before and its child after a reaping, still
      // skews a window a little.)
      const before = new Map<number, number>();
      for (const [pid, p] of firstProcs) {
        if (alive(pid)) continue;
        let anc = p.ppid;
        for (let hops = 0; hops < 64 && firstProcs.has(anc) && !alive(anc); hops++) anc = firstProcs.get(anc)!.ppid;
        if (alive(anc)) before.set(anc, (before.get(anc) ?? 0) + p.ticks);
      }
      for (const [pid, p] of procs) {
        if (group === undefined || !isOurs(p)) continue;
        const used = Math.max(0, p.ticks - (alive(pid) ? firstProcs.get(pid)!.ticks : 0) - (before.get(pid) ?? 0));
        if (used > 0) ours[labelOf(pid)] = (ours[labelOf(pid)] ?? 0) + (100 * used) / total;
      }
      const busyPct = (100 * (last.busy - first.busy)) / total;
      // Whatever busy time is not this run's is someone else's (a process that came and went inside
      // the window is seen by no snapshot: it counts for its parent once reaped, see processTicks,
      // and here before that or when its parent is not this run's).
      const othersPct = Math.max(0, busyPct - Object.values(ours).reduce((a, b) => a + b, 0));
      return {
        busyPct,
        othersPct,
        ours,
        stealPct: (100 * (last.steal - first.steal)) / total,
        runnable: counts.length ? counts.reduce((a, b) => a + b, 0) / counts.length : NaN,
      };
    },
  };
}

export const describeCpu = (c: CpuWindow | undefined) =>
  c
    ? `CPU ${c.busyPct.toFixed(0)}% busy (${Object.entries(c.ours)
        .filter(([, v]) => v >= 1)
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${v.toFixed(0)}%`)
        .join(', ')}, other processes ${c.othersPct.toFixed(0)}%) + ${c.stealPct.toFixed(0)}% steal, ${c.runnable.toFixed(1)} runnable`
    : 'CPU n/a';

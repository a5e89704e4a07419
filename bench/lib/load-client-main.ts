import http from 'node:http';
import pg from 'pg';
import { serveIpc } from './ipc-child';
import { randomId, type LoadConfig, type LoadRequest, type LoadRun, type LoadWindow } from './load-client';
import { openLoop, type LoadKind } from './open-loop';
import { rowData } from './rows';

/** The load generator's process (see load-client.ts). */
const config = JSON.parse(process.env.LOAD_CONFIG!) as LoadConfig;
const api = new URL(config.apiUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const editor = new pg.Pool({ connectionString: config.databaseUrl, max: config.editorPool, application_name: 'studio-editor' });
editor.on('error', () => {});

let state = 'between';
/** When each window began, by this process's clock. */
let starts: { state: string; at: number }[] = [];
let stopRun: (() => void) | undefined;
let saves = 0;

const read: LoadKind = {
  name: 'read',
  fire: () => getOk(`/v1/cms-tables/${config.readTable}/rows/${randomId(config.reads)}`),
};

async function run(m: Extract<LoadRequest, { kind: 'run' }>): Promise<LoadRun> {
  if (stopRun) throw new Error('a run is already under way');
  starts = [{ state, at: performance.now() }];
  const until = new Promise<void>((resolve) => (stopRun = resolve));
  const windows: Record<string, LoadWindow> = {};
  const windowOf = (s: string) => (windows[s] ??= { read: [], readAt: [], save: [], errors: 0 });
  const save: LoadKind = {
    name: 'save',
    fire: async () => {
      const n = ++saves;
      await editor.query('update cms_rows set draft_data = $1 where id = $2', [JSON.stringify({ ...rowData(n), title: `edited ${n}` }), randomId(m.saves)]);
    },
  };
  const kinds = new Map<string, { read: LoadKind; save: LoadKind }>();
  const kindFor = (s: string) => {
    let k = kinds.get(s);
    if (!k) kinds.set(s, (k = { read: { ...read, name: `${s}:read` }, save: { ...save, name: `${s}:save` } }));
    return k;
  };
  try {
    const res = await openLoop({
      intervalMs: config.intervalMs,
      kindOf: (i) => (i % config.saveEvery === config.saveEvery - 1 ? kindFor(state).save : kindFor(state).read),
      maxDurationMs: m.maxMs,
      until,
      drainTimeoutMs: 60_000,
      // Counted in the state of the window the request was scheduled in (a request sent late,
      // across a change of state, still counts where it was due).
      onAnswer: (name, at, ms) => {
        const kind = name.split(':')[1] as 'read' | 'save';
        let k = starts.length - 1;
        while (k > 0 && starts[k]!.at > at) k--;
        const s = starts[k]!.state;
        const w = windowOf(s);
        w[kind].push(ms);
        if (kind === 'read') w.readAt.push({ offset: at - starts[k]!.at, ms, window: starts.slice(0, k).filter((x) => x.state === s).length });
      },
    });
    for (const [name, k] of Object.entries(res.byKind)) {
      const w = windowOf(name.split(':')[0]!);
      w.errors += k.errors + k.unanswered;
      w.firstError ??= k.firstError;
    }
    return { windows, lag: res.maxSendLagMs };
  } finally {
    stopRun = undefined;
  }
}

function getOk(path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: api.hostname, port: api.port, path, method: 'GET', agent, headers: { authorization: `Bearer ${config.token}` } },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`GET row answered ${res.statusCode}`))));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

serveIpc<LoadRequest>(
  async (m) => {
    if (m.kind === 'state') {
      state = m.state;
      starts.push({ state, at: performance.now() });
      return null;
    }
    if (m.kind === 'stop') {
      stopRun?.();
      return null;
    }
    return run(m);
  },
  async () => {
    agent.destroy();
    await editor.end();
  },
);

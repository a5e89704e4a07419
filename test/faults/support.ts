import http from 'node:http';
import type { Database } from '@platform/db';
import { freePort } from '../../scripts/lib/services';
import { ADMIN_TOKEN, createTestEnv, spawnApp, waitFor, type AppProcess, type TestEnv } from '../helpers';

/** Shared pieces of the fault suite: real API and worker processes, and the checks every test makes. */

export interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json(): any;
}

export interface CallOptions {
  token?: string;
  json?: unknown;
  body?: string | Buffer;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/**
 * One HTTP request over a real socket. Resolves with the answer even when the server stops reading
 * the body early (a 413 with `Connection: close` makes the client's write fail after the answer).
 */
export function call(base: string, method: string, path: string, o: CallOptions = {}): Promise<Res> {
  const headers: Record<string, string> = { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}) };
  let body: Buffer | undefined;
  if (o.json !== undefined) {
    body = Buffer.from(JSON.stringify(o.json));
    headers['content-type'] = 'application/json';
  } else if (o.body !== undefined) {
    body = Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body);
  }
  Object.assign(headers, o.headers);
  if (body && headers['transfer-encoding'] === undefined) headers['content-length'] = String(body.length);
  if (body && body.length > 512 * 1024) return rawCall(base, method, path, headers, body, o.timeoutMs ?? 60_000);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request(`${base}${path}`, { method, headers, timeout: o.timeoutMs ?? 30_000 }, (res) => {
      answered = true;
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        if (!req.writableEnded) req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json: () => JSON.parse(text) });
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${o.timeoutMs ?? 30_000} ms`)));
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (body) {
      // In pieces, reading between them, as a browser or curl does: a server that answers early
      // (413) and closes is seen answering, not as a broken pipe.
      void (async () => {
        const step = 256 * 1024;
        for (let at = 0; at < body.length && !answered && !req.destroyed; at += step) {
          if (!req.write(body.subarray(at, at + step))) {
            await new Promise((r) => {
              req.once('drain', r);
              req.once('close', r);
            });
          }
          await new Promise((r) => setImmediate(r));
        }
        if (!answered && !req.destroyed) req.end();
      })();
    } else {
      req.end();
    }
  });
}

/**
 * A request with a large body over a bare socket, as curl sends it: the body goes in pieces while
 * the answer is read, and a server that answers early and closes (413) is heard, whatever happens
 * to the rest of the body. (Node's http client reports the broken pipe and drops the answer.)
 */
async function rawCall(base: string, method: string, path: string, headers: Record<string, string>, body: Buffer, timeoutMs: number): Promise<Res> {
  const net = await import('node:net');
  const u = new URL(base);
  const chunked = headers['transfer-encoding'] === 'chunked';
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    let got = Buffer.alloc(0);
    let answer: Res | undefined;
    const timer = setTimeout(() => sock.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const parse = (closed: boolean): Res | undefined => {
      let at = 0;
      for (;;) {
        const end = got.indexOf('\r\n\r\n', at);
        if (end === -1) return undefined;
        const [statusLine, ...lines] = got.subarray(at, end).toString('latin1').split('\r\n');
        const status = Number(statusLine!.split(' ')[1]);
        const h: http.IncomingHttpHeaders = {};
        for (const l of lines) {
          const i = l.indexOf(':');
          h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        at = end + 4;
        if (status >= 100 && status < 200) continue; // 100 Continue
        let content: Buffer | undefined;
        if (h['content-length'] !== undefined) {
          const n = Number(h['content-length']);
          if (got.length - at >= n) content = got.subarray(at, at + n);
        } else if (h['transfer-encoding'] === 'chunked') {
          const parts: Buffer[] = [];
          let p = at;
          for (;;) {
            const nl = got.indexOf('\r\n', p);
            if (nl === -1) break;
            const size = parseInt(got.subarray(p, nl).toString('latin1'), 16);
            if (size === 0) {
              content = Buffer.concat(parts);
              break;
            }
            if (got.length < nl + 2 + size + 2) break;
            parts.push(got.subarray(nl + 2, nl + 2 + size));
            p = nl + 2 + size + 2;
          }
        } else if (closed) {
          content = got.subarray(at);
        }
        if (!content) return undefined;
        const text = content.toString('utf8');
        return { status, headers: h, body: text, json: () => JSON.parse(text) };
      }
    };
    const settle = (closed: boolean) => {
      if (answer) return;
      answer = parse(closed);
      if (answer) {
        clearTimeout(timer);
        resolve(answer);
        sock.destroy();
      } else if (closed) {
        clearTimeout(timer);
        reject(new Error(`${method} ${path}: the connection closed without an answer`));
      }
    };
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      settle(false);
    });
    sock.on('error', () => {}); // a broken pipe: what was read stands
    sock.on('close', () => settle(true));
    sock.on('connect', () => {
      const head = [`${method} ${path} HTTP/1.1`, `host: ${u.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), 'connection: close'];
      sock.write(head.join('\r\n') + '\r\n\r\n');
      void (async () => {
        const step = 256 * 1024;
        for (let at = 0; at < body.length && !answer && !sock.destroyed; at += step) {
          const piece = body.subarray(at, at + step);
          const data = chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece;
          if (!sock.write(data)) {
            await new Promise((r) => {
              sock.once('drain', r);
              sock.once('close', r);
            });
          }
          await new Promise((r) => setImmediate(r));
        }
        if (chunked && !answer && !sock.destroyed) sock.write('0\r\n\r\n');
      })();
    });
  });
}

export interface ApiProcess {
  url: string;
  process: AppProcess;
  call(method: string, path: string, o?: CallOptions): Promise<Res>;
  stop(): Promise<void>;
}

/** Starts the API as deployments do (`apps/api/src/server.ts`) on a free port. */
export async function startApi(env: Record<string, string>): Promise<ApiProcess> {
  const port = await freePort();
  const p = spawnApp('apps/api/src/server.ts', {
    ADMIN_TOKEN,
    API_HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    ...env,
    API_PORT: String(port),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (p.child.exitCode !== null) throw new Error(`the API exited at start:\n${p.output()}`);
      return call(url, 'GET', '/healthz', { timeoutMs: 1_000 }).then((r) => r.status === 200, () => false);
    },
    { timeoutMs: 30_000, intervalMs: 100, what: 'the API to listen' },
  );
  return {
    url,
    process: p,
    call: (method, path, o) => call(url, method, path, o),
    async stop() {
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await p.exited;
      clearTimeout(t);
    },
  };
}

/** Worker processes of one test file; none outlives its test. */
export class Fleet {
  readonly all: AppProcess[] = [];
  constructor(private readonly env: () => Record<string, string>) {}

  start(extra: Record<string, string> = {}): AppProcess {
    const w = spawnApp('apps/worker/src/main.ts', { ...this.env(), ...extra });
    this.all.push(w);
    return w;
  }

  alive(): AppProcess[] {
    return this.all.filter((w) => w.child.exitCode === null && w.child.signalCode === null);
  }

  output(): string {
    return this.all.map((w) => w.output()).join('\n');
  }

  async killAll(): Promise<void> {
    for (const w of this.all) {
      w.child.kill('SIGCONT');
      w.kill('SIGKILL');
    }
    await Promise.all(this.all.map((w) => w.exited));
    this.all.length = 0;
  }
}

/** What most fault files stand on: a cloned database on the shared server and the API as a process. */
export interface FaultWorld {
  t: TestEnv;
  api: ApiProcess;
}

export async function openFaultWorld(): Promise<FaultWorld> {
  const t = await createTestEnv();
  return { t, api: await startApi(t.env) };
}

/** Stops the file's workers, then its API, then drops its database (what `openFaultWorld` made). */
export async function closeFaultWorld(world: Partial<FaultWorld>, fleet: Fleet): Promise<void> {
  await fleet.killAll();
  await world.api?.stop();
  await world.t?.cleanup();
}

export interface Workspace {
  teamId: string;
  token: string;
  tokenId: string;
  projectId: string;
  tableId: string;
}

export const FIELDS = [
  { name: 'title', type: 'text', required: true },
  { name: 'views', type: 'number' },
  { name: 'meta', type: 'json' },
];

function must(r: Res, status: number, what: string): Res {
  if (r.status !== status) throw new Error(`${what}: expected ${status}, got ${r.status} ${r.body.slice(0, 500)}`);
  return r;
}

export async function createWorkspace(api: ApiProcess, name: string, fields: unknown[] = FIELDS): Promise<Workspace> {
  const team = must(await api.call('POST', '/v1/admin/teams', { token: ADMIN_TOKEN, json: { name } }), 201, 'create team').json();
  const projectId = must(await api.call('POST', '/v1/projects', { token: team.token, json: { name: 'site' } }), 201, 'create project').json().id;
  const tableId = await createTable(api, team.token, projectId, fields);
  return { teamId: team.id, token: team.token, tokenId: team.tokenId, projectId, tableId };
}

export async function createTable(api: ApiProcess, token: string, projectId: string, fields: unknown[] = FIELDS, name = 'posts'): Promise<string> {
  const r = await api.call('POST', `/v1/projects/${projectId}/cms-tables`, { token, json: { name, fields } });
  return must(r, 201, 'create table').json().id;
}

/** Posts an import; returns the job id (202 expected). */
export async function postImport(api: ApiProcess, token: string, tableId: string, file: string | Buffer, query = 'format=ndjson'): Promise<string> {
  const csv = /format=csv/.test(query);
  const r = await api.call('POST', `/v1/cms-tables/${tableId}/imports?${query}`, {
    token,
    body: file,
    headers: { 'content-type': csv ? 'text/csv' : 'application/x-ndjson' },
  });
  return must(r, 202, 'import').json().id;
}

/** An NDJSON file of `n` rows `<prefix>000123` whose `views` repeats the number (for exactness checks). */
export function ndjsonFile(n: number, prefix = 'row-', pad = 40): string {
  const filler = 'p'.repeat(pad);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) {
    parts.push(`{"identifier":"${prefix}${String(i).padStart(7, '0')}","title":"Row ${i} ${filler}","views":${i}}\n`);
  }
  return parts.join('');
}

export interface JobState {
  id: string;
  status: string;
  lease: number;
  attempts: number;
  chunkSeq: number;
  dispatches: number;
  done: number;
  total: number | null;
  error: { code: string; message: string } | null;
  result: unknown;
}

export async function jobState(db: Database, id: string): Promise<JobState> {
  const r = await db.pool.query(
    `select id, status, lease, attempts, chunk_seq as "chunkSeq", dispatches, progress_done::int as done,
            progress_total::int as total, error, result from jobs where id = $1`,
    [id],
  );
  if (!r.rows[0]) throw new Error(`no job ${id}`);
  return r.rows[0];
}

export const ENDED = ['completed', 'failed', 'cancelled'];

export function waitEnded(db: Database, id: string, timeoutMs = 120_000): Promise<JobState> {
  return waitFor(
    async () => {
      const j = await jobState(db, id);
      return ENDED.includes(j.status) ? j : undefined;
    },
    { timeoutMs, intervalMs: 100, what: `job ${id} to end` },
  );
}

/** Rows of a table as an import of `ndjsonFile` should leave them: count, distinct identifiers, matching values. */
export async function tableFigures(db: Database, tableId: string): Promise<{ n: number; idents: number; matching: number }> {
  const r = await db.pool.query(
    `select count(*)::int as n, count(distinct identifier)::int as idents,
            count(*) filter (where (draft_data->>'views')::bigint = substring(identifier from '[0-9]+$')::bigint)::int as matching
     from cms_rows where table_id = $1 and deleted_at is null`,
    [tableId],
  );
  return r.rows[0];
}

/** Every committed chunk once: seq 1..n without gaps; returns their count and the rows they cover. */
export async function chunkFigures(db: Database, jobId: string): Promise<{ chunks: number; contiguous: boolean; rows: number; leases: number }> {
  const r = await db.pool.query<{ seq: number; lease: number; rows: number }>(
    'select seq, lease, rows from job_chunks where job_id = $1 order by seq',
    [jobId],
  );
  return {
    chunks: r.rows.length,
    contiguous: r.rows.every((c, i) => c.seq === i + 1),
    rows: r.rows.reduce((s, c) => s + c.rows, 0),
    leases: new Set(r.rows.map((c) => c.lease)).size,
  };
}

/** A small seeded generator (mulberry32): the seed is printed, so a failing schedule can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Lines of a process's log (pino JSON) whose message or error matches. */
export function logLines(output: string, re: RegExp): string[] {
  return output.split('\n').filter((l) => re.test(l));
}

/**
 * Keys (of `match`) whose value contains one of `secrets`, whatever the key's type: a token must
 * never be readable in Redis (it carries envelopes: ids and small options).
 */
export async function keysHoldingSecrets(redisUrl: string, match: string, secrets: string[]): Promise<{ scanned: number; leaks: string[] }> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const leaks: string[] = [];
  let scanned = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', match, 'COUNT', 500);
      cursor = next;
      for (const key of keys) {
        scanned++;
        const type = await redis.type(key);
        let values: string[] = [];
        if (type === 'string') values = [(await redis.get(key)) ?? ''];
        else if (type === 'hash') values = Object.entries(await redis.hgetall(key)).flat();
        else if (type === 'list') values = await redis.lrange(key, 0, -1);
        else if (type === 'set') values = await redis.smembers(key);
        else if (type === 'zset') values = await redis.zrange(key, '0', '-1');
        else if (type === 'stream') values = (await redis.xrange(key, '-', '+')).flatMap(([id, fields]) => [id, ...fields]);
        const text = [key, ...values].join('\n');
        if (secrets.some((s) => s && text.includes(s))) leaks.push(key);
      }
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return { scanned, leaks };
}

export interface TcpProxy {
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  through(url: string): string;
  /**
   * Stops forwarding on every connection open now, in both directions, without closing any: each
   * end sees a connection that is up and silent (a half-open connection, as after a partition).
   * New connections are forwarded as before. Returns how many connections were frozen.
   */
  freeze(): number;
  close(): Promise<void>;
}

/** A small TCP proxy on 127.0.0.1 in front of `target` (PostgreSQL, here). */
export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const net = await import('node:net');
  const pairs = new Set<{ a: import('node:net').Socket; b: import('node:net').Socket; frozen: boolean }>();
  const server = net.createServer((a) => {
    const b = net.connect(target.port, target.host);
    const pair = { a, b, frozen: false };
    pairs.add(pair);
    a.on('data', (d) => {
      if (!pair.frozen) b.write(d);
    });
    b.on('data', (d) => {
      if (!pair.frozen) a.write(d);
    });
    const end = () => {
      if (pair.frozen) return;
      a.destroy();
      b.destroy();
      pairs.delete(pair);
    };
    for (const s of [a, b]) {
      s.on('close', end);
      s.on('error', () => {});
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    port,
    through(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    freeze() {
      let n = 0;
      for (const p of pairs) {
        if (!p.frozen) n++;
        p.frozen = true;
      }
      return n;
    },
    async close() {
      for (const p of pairs) {
        p.a.destroy();
        p.b.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

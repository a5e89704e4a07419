import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import * as schema from './schema/index';

export type Schema = typeof schema;
export type Db = NodePgDatabase<Schema>;
/** A transaction handle; query functions take `Db | Tx` so the caller owns the transaction. */
export type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];
export type DbOrTx = Db | Tx;

export interface PoolOptions {
  url: string;
  /** Hard maximum of connections this pool opens (connection budget, ARCHITECTURE invariant 5). */
  max: number;
  applicationName: string;
  /** Session-wide guard given as a connection option, so no `SET` is needed (PgBouncer-safe). */
  idleInTransactionTimeoutMs?: number;
  connectionTimeoutMs?: number;
  /**
   * Client-side cap on waiting for an answer (pg's `query_timeout`); set it above the server's
   * statement_timeout. Only this notices a half-open connection (the server's replies stop
   * arriving, nothing closes): TCP keepalive sees a live peer, and without it a worker waited
   * forever (fault suite, test/faults/postgres.test.ts). The connection of a query that timed out
   * is closed, so the pool drops it instead of handing it out again.
   */
  queryTimeoutMs?: number;
}

export interface Database {
  pool: pg.Pool;
  db: Db;
  close(): Promise<void>;
}

export function createDatabase(opts: PoolOptions): Database {
  const options = opts.idleInTransactionTimeoutMs
    ? `-c idle_in_transaction_session_timeout=${opts.idleInTransactionTimeoutMs}`
    : undefined;
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max,
    application_name: opts.applicationName,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    options,
    query_timeout: opts.queryTimeoutMs,
  });
  // An idle client losing its server (Postgres restarting) must not crash the process.
  pool.on('error', () => {});
  // Nor may a checked-out one. pg emits 'error' on a client whose connection ends unexpectedly,
  // and pg-pool listens only while the client is idle: a client held through `pool.connect()` (a
  // chunk transaction, any Drizzle `db.transaction`) had no listener, so a restart that caught one
  // mid-transaction threw an uncaught exception and the worker shut itself down; with no other
  // worker the job never moved again (fault suite, test/faults/postgres-restart.test.ts). Nothing
  // is lost by listening: pg also fails the client's pending queries with the error and marks it
  // unqueryable, so the next query on it fails at once and the pool drops it on release.
  pool.on('connect', (client) => client.on('error', ignoreClientError));
  if (opts.queryTimeoutMs) pool.on('connect', closeOnQueryTimeout);
  const db = drizzle(pool, { schema });
  let closed = false;
  return {
    pool,
    db,
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}

function ignoreClientError(): void {}

const isQueryTimeout = (err: unknown) => err instanceof Error && err.message === 'Query read timeout';

/**
 * pg answers a query that timed out with an error but keeps the connection as it was, waiting for
 * a reply that a half-open connection never brings: every later query on it (the rollback, the
 * next transaction once the pool hands it out again) would wait out its own timeout. `end()` on a
 * client with a query in flight destroys the socket and fails what is queued on it ("Connection
 * terminated", a connection error), and the pool then drops the client.
 */
function closeOnQueryTimeout(client: pg.PoolClient): void {
  const query = client.query as (...args: unknown[]) => unknown;
  const close = () => void client.end().catch(() => {});
  client.query = function (this: pg.PoolClient, ...args: unknown[]) {
    const cb = args[args.length - 1];
    if (typeof cb === 'function') {
      args[args.length - 1] = (err: unknown, res: unknown) => {
        if (isQueryTimeout(err)) close();
        return (cb as (e: unknown, r: unknown) => unknown)(err, res);
      };
    }
    const out = query.apply(this, args);
    if (out instanceof Promise) {
      out.catch((err: unknown) => {
        if (isQueryTimeout(err)) close();
      });
    }
    return out;
  } as typeof client.query;
}

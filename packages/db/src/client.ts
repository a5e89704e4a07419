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
  });
  // An idle client losing its server (Postgres restarting) must not crash the process.
  pool.on('error', () => {});
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

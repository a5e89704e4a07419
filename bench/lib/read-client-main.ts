import pg from 'pg';
import { copyOutToNull, downloadToNull } from './big-data';
import { serveIpc } from './ipc-child';
import type { ReadRequest } from './read-client';

/** The read client's process (see read-client.ts): one PostgreSQL session, requests over IPC. */
const client = new pg.Client({ connectionString: process.env.READ_CLIENT_DATABASE_URL });
await client.connect();

serveIpc<ReadRequest>(
  async (m) => {
    if (m.kind === 'download') {
      const t0 = performance.now();
      const r = await downloadToNull(m.url, m.token);
      return { ...r, ms: performance.now() - t0 };
    }
    if (m.kind === 'copy') return copyOutToNull(client, m.sql);
    // Several statements in one string answer with one result each.
    const r: pg.QueryResult | pg.QueryResult[] = await client.query(m.sql);
    return Array.isArray(r) ? r.flatMap((x) => x.rows) : r.rows;
  },
  () => client.end(),
);

import { afterAll, beforeAll, expect, it } from 'vitest';
import { runCopyIn } from '../src/cms/copy-in';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

/** `runCopyIn` on a real PostgreSQL: several prepared COPYs as one statement. */
let t: TestEnv;
beforeAll(async () => {
  t = await createTestEnv();
  await t.database.pool.query('create table copy_in_test (k text primary key, n int)');
});
afterAll(async () => t?.cleanup());

const copy = (rows: [string, number][]) => ({
  sql: 'copy copy_in_test (k, n) from stdin',
  data: Buffer.from(rows.map(([k, n]) => `${k}\t${n}\n`).join('')),
  rows: rows.length,
});

it('runs several prepared COPYs of one statement as one, and answers the rows stored', async () => {
  const client = await t.database.pool.connect();
  try {
    expect(await runCopyIn(client, [copy([['a', 1], ['b', 2]]), copy([['c', 3]])])).toBe(3);
    expect(await runCopyIn(client, [])).toBe(0);
    const r = await client.query('select k, n from copy_in_test order by k');
    expect(r.rows).toEqual([{ k: 'a', n: 1 }, { k: 'b', n: 2 }, { k: 'c', n: 3 }]);
  } finally {
    client.release();
  }
});

it('a COPY that PostgreSQL refuses rejects, stores nothing, and leaves the connection usable', async () => {
  const client = await t.database.pool.connect();
  try {
    await client.query('begin');
    await expect(runCopyIn(client, [copy([['x', 1]]), copy([['x', 2]])])).rejects.toThrow(/duplicate key/);
    await client.query('rollback');
    expect((await client.query(`select count(*)::int as n from copy_in_test where k = 'x'`)).rows[0].n).toBe(0);
  } finally {
    client.release();
  }
});

it('refuses COPYs of different statements', async () => {
  const client = await t.database.pool.connect();
  try {
    await expect(runCopyIn(client, [copy([['y', 1]]), { ...copy([['z', 1]]), sql: 'copy copy_in_test (k) from stdin' }])).rejects.toThrow(/one statement/);
  } finally {
    client.release();
  }
});

it("sends the transaction's opening statements, when given them, ahead of the COPY in one query, once", async () => {
  const client = await t.database.pool.connect();
  try {
    const writer: { opening?: string } = { opening: 'begin; set local lock_timeout = 1234' };
    // Nothing to copy: nothing is sent, and the opening is left for the next statement.
    expect(await runCopyIn(client, [], writer)).toBe(0);
    expect(writer.opening).toBeDefined();
    expect(await runCopyIn(client, copy([['o1', 1]]), writer)).toBe(1);
    expect(writer.opening).toBeUndefined();
    // The COPY ran inside the transaction the opening began, with its settings.
    expect((await client.query(`select current_setting('lock_timeout') as s`)).rows[0].s).toBe('1234ms');
    expect(await runCopyIn(client, copy([['o2', 2]]), writer)).toBe(1);
    await client.query('rollback');
    expect((await client.query(`select count(*)::int as n from copy_in_test where k in ('o1', 'o2')`)).rows[0].n).toBe(0);
  } finally {
    client.release();
  }
});

import { afterAll, beforeAll, expect, it } from 'vitest';
import { countExportRows, exportBounds, exportCountSql, exportPageCopySql, listRowsQuery, uuidv7 } from '@platform/db';
import { readBatchSql } from '../src/project-publish/publish-sql';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

/**
 * An export's page, the API's list of rows and a publish's batches read their table through the `(table_id, id)` index, however many rows of other
 * tables come before its ids in the primary key (UUIDv7: every older row does).
 */
let t: TestEnv;
const team = uuidv7();
const older = uuidv7();
const ours = uuidv7();
// UUIDv7-shaped ids in the order of g: the other table's rows all come first.
const id = (g: string) =>
  `(substr(lpad(to_hex(1700000000000 + ${g}), 12, '0'), 1, 8) || '-' || substr(lpad(to_hex(1700000000000 + ${g}), 12, '0'), 9, 4) || '-7000-8000-' || lpad(to_hex(${g}), 12, '0'))::uuid`;

beforeAll(async () => {
  t = await createTestEnv();
  const q = (s: string) => t.database.pool.query(s);
  // A database of its own (a clone per test file): the rows need no tables behind them here.
  await q('alter table cms_rows drop constraint cms_rows_table_id_cms_tables_id_fk');
  await q(`insert into cms_rows (id, table_id, team_id, identifier, draft_data) select ${id('g')}, '${older}', '${team}', 'o' || g, '{}' from generate_series(1, 400000) g`);
  await q(`insert into cms_rows (id, table_id, team_id, identifier, draft_data) select ${id('g')}, '${ours}', '${team}', 'r' || g, jsonb_build_object('title', 'x' || g) from generate_series(400001, 500000) g`);
  await q('vacuum analyze cms_rows');
}, 120_000);
afterAll(async () => t?.cleanup());

async function plan(sql: string): Promise<string> {
  const r = await t.database.pool.query(`explain ${sql.replace(/^copy \((.*)\) to stdout.*$/s, '$1')}`);
  return r.rows.map((x) => x['QUERY PLAN']).join('\n');
}

it('reads every page on the (table_id, id) index, with or without bounds', async () => {
  const f = { tableId: ours, teamId: team, published: false, fields: [{ name: 'title', type: 'text' as const }], format: 'csv' as const, limit: 20_000 };
  const extent = await exportBounds(t.database.db, f, 40_000);
  expect(extent.some).toBe(40_000);
  expect(await countExportRows(t.database.db, f)).toBe(100_000);
  for (const page of [{}, { upTo: extent.last }, { afterId: extent.first }, { afterId: extent.first, upTo: extent.last }]) {
    const p = await plan(exportPageCopySql({ ...f, ...page, utf8Server: true }));
    expect(p, JSON.stringify(page)).toContain('cms_rows_table_id_idx');
    expect(p, JSON.stringify(page)).not.toContain('cms_rows_pkey');
  }
});

it("counts a draft export's rows on the index of live identifiers alone (index-only, once vacuumed), not a scan of the table", async () => {
  const p = await plan(exportCountSql({ tableId: ours, teamId: team, published: false }));
  expect(p).toMatch(/Index Only Scan using cms_rows_table_identifier_uq/);
  expect(p).not.toContain('Seq Scan');
});

it("lists a table's rows (the API's keyset pages) on the (table_id, id) index too", async () => {
  const extent = await exportBounds(t.database.db, { tableId: ours, teamId: team, published: false }, 1);
  for (const afterId of [undefined, extent.first!]) {
    const q = listRowsQuery(t.database.db, { tableId: ours, teamId: team, published: false, limit: 50, afterId }).toSQL();
    const r = await t.database.pool.query(`explain ${q.sql}`, q.params);
    const p = r.rows.map((x) => x['QUERY PLAN']).join('\n');
    expect(p, String(afterId)).toContain('cms_rows_table_id_idx');
    expect(p, String(afterId)).not.toContain('cms_rows_pkey');
  }
  const rows = await listRowsQuery(t.database.db, { tableId: ours, teamId: team, published: false, limit: 3, afterId: extent.first! });
  expect(rows.map((r) => r.identifier)).toEqual(['r400002', 'r400003', 'r400004']);
});

it("reads a publish's batches on the (table_id, id) index", async () => {
  const extent = await exportBounds(t.database.db, { tableId: ours, teamId: team, published: false }, 1);
  for (const [sql, params] of [
    [readBatchSql(false), [ours, team, 1000, [501]]],
    [readBatchSql(true), [ours, team, 1000, [501], extent.first]],
  ] as const) {
    const r = await t.database.pool.query(`explain ${sql}`, params as unknown as unknown[]);
    const p = r.rows.map((x) => x['QUERY PLAN']).join('\n');
    expect(p, sql.slice(0, 120)).toContain('cms_rows_table_id_idx');
    expect(p, sql.slice(0, 120)).not.toContain('cms_rows_pkey');
  }
});

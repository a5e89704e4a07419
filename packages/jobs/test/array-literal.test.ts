import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, type TestEnv } from '../../../test/helpers';
import { arrayLiteral } from '../src/cms/row-writes';

let t: TestEnv;
beforeAll(async () => {
  t = await createTestEnv();
});
afterAll(async () => {
  await t?.cleanup();
});

describe('arrayLiteral (array parameters encoded before the chunk transaction)', () => {
  it('reaches PostgreSQL as exactly the texts it was given', async () => {
    const items = [
      'plain',
      '',
      'NULL',
      null,
      'a,b',
      '{braces}',
      'say "hi"',
      'back\\slash \\" both',
      ' spaced ',
      'line\nbreak\r\ttab',
      'Ünïcødé — 日本語 🎉',
      JSON.stringify({ title: 'He said "hi"\\n', n: [1, null] }),
    ];
    const r = await t.database.pool.query<{ a: (string | null)[] }>('select $1::text[] as a', [arrayLiteral(items)]);
    expect(r.rows[0]!.a).toEqual(items);
    const empty = await t.database.pool.query<{ n: number }>('select cardinality($1::text[]) as n', [arrayLiteral([])]);
    expect(empty.rows[0]!.n).toBe(0);
  });
});

import { describe, expect, it } from 'vitest';
import type { CmsField } from '@platform/db';
import { ndjsonRow, trustedNdjsonRow } from '../src/cms-import/rows';

const fields: CmsField[] = [
  { name: 'title', type: 'text', required: true },
  { name: 'views', type: 'number' },
  { name: 'meta', type: 'json' },
];

/** What a row stands for, however it was read: the identifier and the data object. */
const meaning = (r: ReturnType<typeof ndjsonRow>) => ({ identifier: r.identifier, data: r.dataText !== undefined ? JSON.parse(r.dataText) : r.data });

describe('trustedNdjsonRow (the write pass after a validate pass)', () => {
  it('cuts a plain line without parsing it: the identifier and the rest of the object as text, meaning what ndjsonRow reads', () => {
    const text = '{"identifier":"r-1","title":"a title, with {braces} and [1.50]","views":-7,"meta":{"tags":["x","y"],"n":1.5,"big":12345678}}';
    const row = trustedNdjsonRow(fields, 3, text);
    expect(row).toEqual({
      line: 3,
      identifier: 'r-1',
      data: {},
      dataText: '{"title":"a title, with {braces} and [1.50]","views":-7,"meta":{"tags":["x","y"],"n":1.5,"big":12345678}}',
      problems: [],
    });
    // The very text the parse path would send.
    expect(row.dataText).toBe(JSON.stringify(ndjsonRow(fields, 3, text).data));
  });

  it('reads every other line as ndjsonRow does: escapes in the identifier, nulls, an id key, a second identifier, other shapes', () => {
    const lines = [
      '{"identifier":"r\\"2","title":"t"}',
      '{"identifier":"r-2b","title":"a \\"quoted\\" title"}',
      '{"identifier":"e1","title":"t","\\u0069d":"x"}',
      '{"identifier":"e2","title":"t","identifi\\u0065r":"e2b"}',
      '{"identifier":"n1","title":"t","views":1.50}',
      '{"identifier":"n2","title":"t","views":1e-20000}',
      '{"identifier":"n3","title":"t","views":12345678901234567890}',
      '{"identifier":"n4","title":"t","views":-0}',
      '{"identifier":"n5","title":"t","meta":[1,2,3.0]}',
      '{"identifier":"r-3","title":"t","views":null}',
      '{"identifier":"r-4","title":"null is a word here"}',
      '{"identifier":"r-5","id":"0191aa7e-0000-7000-8000-000000000000","title":"t"}',
      '{"identifier":"r-6","title":"t","identifier":"r-7"}',
      '{ "identifier": "r-8", "title": "t" }',
      '{"title":"no identifier first","identifier":"r-9"}',
      '{"identifier":"r-10"}',
      '{"identifier":"","title":"t"}',
      '{"title":"no identifier"}',
    ];
    for (const [i, text] of lines.entries()) {
      const row = trustedNdjsonRow(fields, i + 1, text);
      expect(row.dataText, text).toBeUndefined();
      expect(row, text).toEqual(ndjsonRow(fields, i + 1, text));
    }
  });
});

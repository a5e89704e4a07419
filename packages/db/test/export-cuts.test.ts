import { describe, expect, it } from 'vitest';
import { UUID_RE, uuidv7 } from '../src/ids';
import { idCuts } from '../src/queries/cms-export';

describe('idCuts (where an export cuts its ids into ranges)', () => {
  it('spreads the cuts evenly between the first and the last id, in order', () => {
    const first = '00000000-0000-7000-8000-000000000000';
    const last = '00000000-0000-7000-8000-000000000400';
    expect(idCuts(first, last, 2)).toEqual(['00000000-0000-7000-8000-000000000200']);
    expect(idCuts(first, last, 4)).toEqual([
      '00000000-0000-7000-8000-000000000100',
      '00000000-0000-7000-8000-000000000200',
      '00000000-0000-7000-8000-000000000300',
    ]);
    expect(idCuts(first, last, 1)).toEqual([]);
  });

  it('cuts UUIDv7 ids written at a steady pace into ranges of about as many rows', () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => uuidv7(1_700_000_000_000 + i)).sort();
    const cuts = idCuts(ids[0]!, ids.at(-1)!, 3);
    expect(cuts).toHaveLength(3 - 1);
    for (const c of cuts) expect(c).toMatch(UUID_RE);
    const sizes = [0, 0, 0];
    for (const id of ids) sizes[cuts.filter((c) => id > c).length]!++;
    for (const n of sizes) expect(Math.abs(n - 10_000 / 3)).toBeLessThan(100);
  });

  it('never cuts at or past the last id, nor twice at one id, however close the ids', () => {
    const one = '01a21d02-b0eb-723d-a4bb-c8808608493a';
    const next = '01a21d02-b0eb-723d-a4bb-c8808608493b';
    const third = '01a21d02-b0eb-723d-a4bb-c8808608493c';
    expect(idCuts(one, one, 4)).toEqual([]);
    // A cut is a range's last id (inclusive): at `one`, range 0 holds the first row alone.
    expect(idCuts(one, next, 4)).toEqual([one]);
    expect(idCuts(one, third, 4)).toEqual([one, next]);
  });
});

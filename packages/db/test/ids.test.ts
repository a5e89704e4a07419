import { describe, expect, it } from 'vitest';
import { UUID_RE, uuidv7 } from '../src/ids';

describe('uuidv7', () => {
  it('is a well-formed version 7, variant 1 UUID, ordered by time, unique', () => {
    const ids = Array.from({ length: 20_000 }, () => uuidv7());
    for (const id of ids.slice(0, 100)) {
      expect(id).toMatch(UUID_RE);
      expect(id[14]).toBe('7');
      expect('89ab').toContain(id[19]);
    }
    expect(new Set(ids).size).toBe(ids.length);
    const t = Date.now();
    expect(uuidv7(t) < uuidv7(t + 1)).toBe(true);
    expect(uuidv7(0x0123456789ab).slice(0, 13)).toBe('01234567-89ab');
  });
});

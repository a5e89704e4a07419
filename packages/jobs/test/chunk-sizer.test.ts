import { describe, expect, it } from 'vitest';
import { ChunkSizer } from '../src/chunk-sizer';

describe('chunk sizer', () => {
  const opts = { initial: 1_000, min: 50, max: 20_000, targetMs: 200 };

  it('shrinks at once to what fits the budget when a chunk runs long', () => {
    const s = new ChunkSizer(opts);
    s.observe(1_000, 800); // 1.25 rows/ms → 250 rows fit in 200 ms
    expect(s.size).toBe(250);
  });

  it('grows toward the budget when chunks are quick, at most doubling per chunk', () => {
    const s = new ChunkSizer(opts);
    s.observe(1_000, 20); // 50 rows/ms → 10,000 would fit
    expect(s.size).toBe(2_000);
    s.observe(2_000, 40);
    expect(s.size).toBe(4_000);
    for (let i = 0; i < 20; i++) s.observe(s.size, s.size / 50);
    expect(s.size).toBeGreaterThan(9_000);
    expect(s.size).toBeLessThanOrEqual(10_000);
  });

  it('stays within its bounds and halves under pressure', () => {
    const s = new ChunkSizer(opts);
    s.observe(1_000, 100_000);
    expect(s.size).toBe(50);
    const t = new ChunkSizer(opts);
    t.backOff();
    expect(t.size).toBe(500);
    for (let i = 0; i < 50; i++) t.observe(t.size, 1);
    expect(t.size).toBe(20_000);
  });
});

import { describe, expect, it } from 'vitest';
import { ChunkSizer } from '../src/chunk-sizer';

describe('chunk sizer', () => {
  const opts = { initial: 1_000, min: 50, max: 20_000, targetMs: 200 };

  it('shrinks at once to what fits its aim (40% of the budget) when a chunk runs long', () => {
    const s = new ChunkSizer(opts);
    s.observe(1_000, 800); // 1.25 rows/ms → 100 rows fit in 80 ms
    expect(s.size).toBe(100);
    const t = new ChunkSizer(opts);
    t.observe(1_000, 160); // within the budget, over the aim: shrinks too
    expect(t.size).toBe(500);
  });

  it('grows toward its aim when chunks are quick, at most ×1.5 per chunk', () => {
    const s = new ChunkSizer(opts);
    s.observe(1_000, 20); // 50 rows/ms → 4,000 would fit in 80 ms
    expect(s.size).toBe(1_500);
    s.observe(1_500, 30);
    expect(s.size).toBe(2_250);
    for (let i = 0; i < 30; i++) s.observe(s.size, s.size / 50);
    expect(s.size).toBeGreaterThan(3_600);
    expect(s.size).toBeLessThanOrEqual(4_000);
  });

  it('starts over from its first size when the run changes kind of chunk', () => {
    const s = new ChunkSizer(opts);
    for (let i = 0; i < 10; i++) s.observe(s.size, 1);
    expect(s.size).toBe(20_000);
    s.reset();
    expect(s.size).toBe(1_000);
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

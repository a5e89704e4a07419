import { describe, expect, it } from 'vitest';
import { PressureGauge } from '../src/pressure-gauge';

function gauge(memoryMs: number) {
  let t = 1_000_000;
  let key = false;
  let reads = 0;
  const g = new PressureGauge(
    async () => {
      reads++;
      return { up: key };
    },
    { pollMs: 250, memoryMs },
    () => t,
  );
  return {
    g,
    set: (v: boolean) => (key = v),
    advance: (ms: number) => (t += ms),
    reads: () => reads,
  };
}

describe('the pressure gauge', () => {
  it('reads 0 until pressure is seen, 1 while the key is up', async () => {
    const x = gauge(30_000);
    expect(await x.g.level()).toBe(0);
    x.set(true);
    x.advance(250);
    expect(await x.g.level()).toBe(1);
  });

  it('remembers pressure after the key is gone, falling linearly to 0 over the memory', async () => {
    const x = gauge(30_000);
    x.set(true);
    expect(await x.g.level()).toBe(1);
    x.set(false);
    x.advance(250);
    expect(await x.g.level()).toBeCloseTo(1 - 250 / 30_000, 5);
    x.advance(14_750); // 15 s after it was last seen
    expect(await x.g.level()).toBeCloseTo(0.5, 5);
    x.advance(15_000);
    expect(await x.g.level()).toBe(0);
  });

  it('with no memory, paces only while the key is up', async () => {
    const x = gauge(0);
    x.set(true);
    expect(await x.g.level()).toBe(1);
    x.set(false);
    x.advance(250);
    expect(await x.g.level()).toBe(0);
  });

  it('reads Redis at most once per poll interval', async () => {
    const x = gauge(30_000);
    await Promise.all([x.g.level(), x.g.level(), x.g.level()]);
    await x.g.level();
    expect(x.reads()).toBe(1);
    x.advance(250);
    await x.g.level();
    expect(x.reads()).toBe(2);
  });

  it('a Redis that does not answer reads as no pressure, and the memory keeps counting down', async () => {
    let t = 0;
    let fail = false;
    const g = new PressureGauge(async () => {
      if (fail) throw new Error('connection closed');
      return { up: true };
    }, { pollMs: 250, memoryMs: 1_000 }, () => t);
    expect(await g.level()).toBe(1);
    fail = true;
    t += 500;
    expect(await g.level()).toBeCloseTo(0.5, 5);
    t += 500;
    expect(await g.level()).toBe(0);
  });

  it('counts the memory from when the API last signalled, by Redis, even for pressure it never saw', async () => {
    let t = 100_000;
    const g = new PressureGauge(async () => ({ up: false, sinceMs: 6_000 }), { pollMs: 250, memoryMs: 30_000 }, () => t);
    expect(await g.level()).toBeCloseTo(0.8, 5);
    t += 24_000; // read again: still 6 s ago by the server (the API signalled again meanwhile)
    expect(await g.level()).toBeCloseTo(0.8, 5);
    const never = new PressureGauge(async () => ({ up: false }), { pollMs: 250, memoryMs: 30_000 }, () => t);
    expect(await never.level()).toBe(0);
  });
});

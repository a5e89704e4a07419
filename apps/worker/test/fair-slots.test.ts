import { describe, expect, it } from 'vitest';
import { FairSlots, NoSlotsError } from '../src/fair-slots';

describe('fair slots', () => {
  it('gives a freed slot to the team holding none before the team holding the others', async () => {
    const slots = new FairSlots({ size: 2 });
    const a1 = await slots.acquire({ teamId: 'A', workClass: 'bulk' });
    await slots.acquire({ teamId: 'A', workClass: 'bulk' });
    const order: string[] = [];
    void slots.acquire({ teamId: 'A', workClass: 'bulk' }).then(() => order.push('A3'));
    void slots.acquire({ teamId: 'A', workClass: 'bulk' }).then(() => order.push('A4'));
    void slots.acquire({ teamId: 'B', workClass: 'bulk' }).then(() => order.push('B1'));
    expect(slots.shouldYield({ teamId: 'A', workClass: 'bulk' })).toBe(true);
    a1();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['B1']);
  });

  it('charges measured slot time: of two idle teams, the one that used less goes first', async () => {
    let now = 0;
    const slots = new FairSlots({ size: 1, now: () => now });
    const heavy = await slots.acquire({ teamId: 'heavy', workClass: 'bulk' });
    now += 10_000;
    heavy();
    const light = await slots.acquire({ teamId: 'light', workClass: 'bulk' });
    now += 10;
    const order: string[] = [];
    void slots.acquire({ teamId: 'heavy', workClass: 'bulk' }).then(() => order.push('heavy'));
    void slots.acquire({ teamId: 'light', workClass: 'bulk' }).then(() => order.push('light'));
    light();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['light']);
    expect(slots.usageOf('heavy')).toBeGreaterThan(slots.usageOf('light'));
  });

  it('runs a team’s interactive work ahead of its bulk work, and asks bulk work to yield for it', async () => {
    const slots = new FairSlots({ size: 1 });
    const bulk = await slots.acquire({ teamId: 'A', workClass: 'bulk' });
    expect(slots.shouldYield({ teamId: 'A', workClass: 'bulk' })).toBe(false);
    const order: string[] = [];
    void slots.acquire({ teamId: 'A', workClass: 'bulk' }).then(() => order.push('bulk'));
    expect(slots.shouldYield({ teamId: 'A', workClass: 'bulk' })).toBe(false);
    void slots.acquire({ teamId: 'A', workClass: 'interactive' }).then(() => order.push('interactive'));
    expect(slots.shouldYield({ teamId: 'A', workClass: 'bulk' })).toBe(true);
    bulk();
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['interactive']);
  });

  it('never grants more slots than it has, and releasing twice frees one slot', async () => {
    const slots = new FairSlots({ size: 3 });
    const releases = await Promise.all([1, 2, 3].map((i) => slots.acquire({ teamId: `t${i}`, workClass: 'bulk' })));
    let granted = 0;
    void slots.acquire({ teamId: 'x', workClass: 'bulk' }).then(() => granted++);
    void slots.acquire({ teamId: 'y', workClass: 'bulk' }).then(() => granted++);
    await new Promise((r) => setImmediate(r));
    expect(slots.inUse).toBe(3);
    expect(granted).toBe(0);
    releases[0]!();
    releases[0]!();
    await new Promise((r) => setImmediate(r));
    expect(granted).toBe(1);
    expect(slots.inUse).toBe(3);
  });

  it('shrinking takes free slots at once and running ones as they end, without cutting a run short', async () => {
    const slots = new FairSlots({ size: 4 });
    const held = await Promise.all([1, 2, 3].map((i) => slots.acquire({ teamId: `t${i}`, workClass: 'bulk' })));
    let granted = 0;
    void slots.acquire({ teamId: 'w1', workClass: 'bulk' }).then(() => granted++);
    void slots.acquire({ teamId: 'w2', workClass: 'bulk' }).then(() => granted++);
    await new Promise((r) => setImmediate(r));
    expect(granted).toBe(1); // the fourth slot was free
    slots.resize(1);
    expect(slots.size).toBe(1);
    expect(slots.inUse).toBe(4); // nothing is cut short
    held[0]!();
    held[1]!();
    held[2]!();
    await new Promise((r) => setImmediate(r));
    // Three runs ended: three of the four running slots are retired, none goes to the waiter.
    expect(granted).toBe(1);
    expect(slots.inUse).toBe(1);
  });

  it('growing again first cancels the slots still to be retired, then starts waiting jobs', async () => {
    const slots = new FairSlots({ size: 2 });
    const a = await slots.acquire({ teamId: 'a', workClass: 'bulk' });
    await slots.acquire({ teamId: 'b', workClass: 'bulk' });
    let granted = 0;
    void slots.acquire({ teamId: 'c', workClass: 'bulk' }).then(() => granted++);
    slots.resize(1); // one running slot is to be retired
    slots.resize(3); // one of the two new slots cancels that, the other starts the waiter
    await new Promise((r) => setImmediate(r));
    expect(granted).toBe(1);
    expect(slots.inUse).toBe(3);
    a();
    await new Promise((r) => setImmediate(r));
    expect(slots.inUse).toBe(2);
    expect(() => slots.resize(-1)).toThrow();
  });

  it('with no slots at all, waiting and new requests are refused (to be handed back) and running ones end normally', async () => {
    const slots = new FairSlots({ size: 1 });
    const running = await slots.acquire({ teamId: 'a', workClass: 'bulk' });
    const waiting = slots.acquire({ teamId: 'b', workClass: 'bulk' });
    slots.resize(0);
    await expect(waiting).rejects.toBeInstanceOf(NoSlotsError);
    await expect(slots.acquire({ teamId: 'c', workClass: 'bulk' })).rejects.toBeInstanceOf(NoSlotsError);
    expect(slots.inUse).toBe(1);
    running();
    expect(slots.inUse).toBe(0);
    slots.resize(2);
    const again = await slots.acquire({ teamId: 'c', workClass: 'bulk' });
    expect(slots.inUse).toBe(1);
    again();
  });
});

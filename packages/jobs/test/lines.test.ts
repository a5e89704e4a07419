import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readLines } from '../src/lines';

describe('readLines', () => {
  it('splits a stream into lines with the byte offset past each, whatever the chunk boundaries', async () => {
    const stream = Readable.from([Buffer.from('ab\ncd'), Buffer.from('e\n\nf')]);
    const lines = [];
    for await (const l of readLines(stream, 10)) lines.push([l.text, l.end]);
    expect(lines).toEqual([
      ['ab', 13],
      ['cde', 17],
      ['', 18],
      ['f', 19],
    ]);
  });

  it('lets the event loop turn while it reads thousands of lines of one buffer', async () => {
    // One 1,000-line buffer: without turns, its lines would all be read as one task.
    const stream = Readable.from([Buffer.from('x\n'.repeat(1_000))]);
    let turned = -1;
    let read = 0;
    setImmediate(() => (turned = read));
    for await (const _ of readLines(stream)) read++;
    expect(read).toBe(1_000);
    expect(turned).toBeGreaterThan(0);
    expect(turned).toBeLessThan(1_000);
  });
});

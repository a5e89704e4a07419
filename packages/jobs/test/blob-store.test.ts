import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '@platform/jobs';

let dir: string;
let blobs: FsBlobStore;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'blob-store-'));
  blobs = new FsBlobStore(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Bytes that differ at every offset (a piece read at the wrong place shows). */
function pattern(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + (i >> 8) * 7) & 0xff;
  return b;
}

describe('FsBlobStore.read', () => {
  it('gives a blob larger than its buffer exactly, in pieces that share one reused buffer', async () => {
    const data = pattern(2.5 * 2 ** 20 + 17);
    await blobs.put('r/big', data);
    const copies: Buffer[] = [];
    const memory = new Set<ArrayBufferLike>();
    for await (const piece of blobs.read('r/big')) {
      copies.push(Buffer.from(piece)); // a piece is only valid until the next is asked for
      memory.add(piece.buffer);
    }
    expect(copies.length).toBe(3);
    expect(Buffer.concat(copies).equals(data)).toBe(true);
    expect(memory.size).toBe(1);
  });

  it('hands its buffer to the next read once done, also when the reader stops early', async () => {
    await blobs.put('r/a', pattern(3 * 2 ** 20));
    await blobs.put('r/b', Buffer.from('small'));
    let first: ArrayBufferLike | undefined;
    for await (const piece of blobs.read('r/a')) {
      first = piece.buffer;
      break;
    }
    const seen: ArrayBufferLike[] = [];
    let text = '';
    for await (const piece of blobs.read('r/b')) {
      seen.push(piece.buffer);
      text += piece.toString('utf8');
    }
    expect(text).toBe('small');
    expect(seen).toHaveLength(1);
    expect(seen[0]).toBe(first);
  });

  it('gives nothing for an empty blob and refuses a missing one', async () => {
    await blobs.put('r/empty', Buffer.alloc(0));
    const pieces: Buffer[] = [];
    for await (const piece of blobs.read('r/empty')) pieces.push(piece);
    expect(pieces).toEqual([]);
    await expect(async () => {
      for await (const _ of blobs.read('r/missing')) void _;
    }).rejects.toThrow(/ENOENT/);
  });
});

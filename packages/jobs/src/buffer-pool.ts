/**
 * Buffers of one size, handed back once their bytes are used and handed out again: reading or
 * writing hundreds of MiB in fresh buffers keeps the garbage collector busy (about half of the
 * worker's main thread while an export read pages; a third of the API's busy time while it sent a
 * download). Keeps at most `keep` of them.
 */
export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  constructor(
    readonly size: number,
    private readonly keep = 8,
  ) {}

  take(): Buffer {
    const spare = this.free.pop();
    return spare ? Buffer.from(spare) : Buffer.allocUnsafeSlow(this.size);
  }

  /** Hands back the buffer `piece` is part of (any other buffer is left to the garbage collector). */
  give(piece: Buffer): void {
    const whole = piece.buffer;
    if (whole instanceof ArrayBuffer && whole.byteLength === this.size && this.free.length < this.keep && !this.free.includes(whole)) this.free.push(whole);
  }
}

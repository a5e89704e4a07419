import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';

export interface Line {
  text: string;
  /** Byte offset just past this line's newline: where a resumed reader starts. */
  end: number;
  /** The line's bytes are not valid UTF-8 (`text` holds U+FFFD in their place). */
  invalidUtf8?: boolean;
}

/**
 * Splits a byte stream into lines, tracking byte offsets so a checkpoint can name a position in
 * the file and a resumed run can seek straight to it. Memory holds one read buffer and one line.
 */
export async function* readLines(stream: Readable, startByte = 0, maxLineBytes = Infinity): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let pendingLen = 0;
  let offset = startByte;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, from);
      if (nl === -1) break;
      const part = chunk.subarray(from, nl);
      const buf = pendingLen ? Buffer.concat([...pending, part], pendingLen + part.length) : part;
      offset += buf.length + 1;
      pending = [];
      pendingLen = 0;
      yield toLine(buf, offset);
      from = nl + 1;
    }
    if (from < chunk.length) {
      const rest = chunk.subarray(from);
      pending.push(rest);
      pendingLen += rest.length;
      if (pendingLen > maxLineBytes) throw new LineTooLongError(offset, maxLineBytes);
    }
  }
  if (pendingLen) {
    const buf = Buffer.concat(pending, pendingLen);
    offset += buf.length;
    yield toLine(buf, offset);
  }
}

/** A line longer than the reader's cap: memory holds one line, so one line must stay bounded. */
export class LineTooLongError extends Error {
  override name = 'LineTooLongError';
  constructor(
    /** Byte offset where the line starts. */
    readonly start: number,
    readonly maxLineBytes: number,
  ) {
    super(`a line starting at byte ${start} is longer than ${maxLineBytes} bytes`);
  }
}

function toLine(buf: Buffer, end: number): Line {
  const text = stripCr(buf.toString('utf8'));
  return isUtf8(buf) ? { text, end } : { text, end, invalidUtf8: true };
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

/** Pulls up to `n` items from an iterator (shared across chunks of one run). */
export async function take<T>(it: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

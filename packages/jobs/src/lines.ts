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
 * A turn of the event loop: long loops of a worker's CPU work (parsing, encoding) await it every
 * few hundred items, so that the answer another run's open transaction waits for is not held up
 * behind them (an idle-in-transaction share of 33–40 % of chunk time in bench worker-connections).
 */
export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Lines read between turns of the event loop (`nextTurn`). */
const LINE_SLICE = 100;

/**
 * Splits a byte stream into lines, tracking byte offsets so a checkpoint can name a position in
 * the file and a resumed run can seek straight to it. Memory holds one read buffer and one line.
 * It lets the event loop turn every LINE_SLICE lines: a read buffer of 1 MiB holds thousands of
 * lines, and a consumer's work on them (a bulk write's JSON and schema checks) would otherwise run
 * as one long task.
 */
export async function* readLines(stream: Readable, startByte = 0, maxLineBytes = Infinity): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let pendingLen = 0;
  let offset = startByte;
  let lines = 0;
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
      if (++lines % LINE_SLICE === 0) await nextTurn();
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

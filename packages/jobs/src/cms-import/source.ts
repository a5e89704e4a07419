import { isUtf8 } from 'node:buffer';
import { pipeline, Transform, type Readable } from 'node:stream';
import { CsvError, parse, type Info } from 'csv-parse';
import type { CmsField } from '@platform/db';
import type { BlobStore } from '../blob-store';
import { JobInputError } from '../errors';
import { LineTooLongError, readLines, type Line } from '../lines';
import { checkCsvHeader, csvRow, ndjsonRow, trustedNdjsonRow, type ImportRow } from './rows';

/** A place in the file: a byte offset and how many line breaks (`\n`) come before it. */
export interface Position {
  byte: number;
  line: number;
}

export interface SourceRecord {
  row: ImportRow;
  /** Just past the record: where a resumed run starts reading. */
  end: Position;
  /** Bytes the record takes in the file (bounds a chunk's memory). */
  bytes: number;
}

/** Streams the rows of an import file from a position; memory holds one record and a read buffer. */
export interface RowSource {
  /** CSV: the column names (from the checkpoint, or once the first record was read). */
  readonly header: string[] | undefined;
  /** Just past what was read so far (the header included): the checkpoint of a chunk. */
  readonly position: Position;
  next(): Promise<SourceRecord | undefined>;
  close(): void;
}

export interface SourceOptions {
  blobs: BlobStore;
  blobKey: string;
  format: 'csv' | 'ndjson';
  fields: readonly CmsField[];
  from: Position;
  /** CSV: the header read by an earlier chunk; the source reads it itself when starting at 0. */
  header?: string[];
  /** A longer record fails the job: one unterminated quote must not pull the whole file into memory. */
  maxRecordBytes: number;
  /** The file passed a validate pass: NDJSON lines of the plain shape are cut, not parsed (`trustedNdjsonRow`). */
  trusted?: boolean;
}

/**
 * A record whose bytes are not valid UTF-8 is an invalid row, named by its line: decoded as it
 * came, its text was stored with U+FFFD in place of the bad bytes and the import completed
 * (fault suite, test/faults/hostile-input.test.ts).
 */
const NOT_UTF8 = (line: number) => ({ line, field: '', message: 'is not valid UTF-8' });

export function openSource(o: SourceOptions): RowSource {
  return o.format === 'csv' ? new CsvSource(o) : new NdjsonSource(o);
}

class NdjsonSource implements RowSource {
  readonly header = undefined;
  private readonly stream: Readable;
  private readonly lines: AsyncIterator<Line>;
  private at: Position;

  constructor(private readonly o: SourceOptions) {
    this.at = { ...o.from };
    this.stream = o.blobs.get(o.blobKey, { start: o.from.byte });
    this.lines = readLines(this.stream, o.from.byte, o.maxRecordBytes)[Symbol.asyncIterator]();
  }

  get position(): Position {
    return { ...this.at };
  }

  async next(): Promise<SourceRecord | undefined> {
    for (;;) {
      let r: IteratorResult<Line>;
      try {
        r = await this.lines.next();
      } catch (err) {
        if (err instanceof LineTooLongError) {
          const line = this.at.line + 1;
          throw new JobInputError(`line ${line} is longer than ${err.maxLineBytes} bytes`, 'validation_failed', [
            { line, field: '', message: `is longer than ${err.maxLineBytes} bytes` },
          ], 1);
        }
        throw err;
      }
      if (r.done) return undefined;
      const start = this.at.byte;
      const line = this.at.line + 1;
      this.at = { byte: r.value.end, line };
      if (r.value.text.trim() === '') continue;
      const row = (this.o.trusted ? trustedNdjsonRow : ndjsonRow)(this.o.fields, line, r.value.text);
      if (r.value.invalidUtf8) row.problems.unshift(NOT_UTF8(line));
      return { row, end: { ...this.at }, bytes: this.at.byte - start };
    }
  }

  close(): void {
    this.stream.destroy();
  }
}

/**
 * Counts line breaks in the bytes the CSV parser has been fed, so each record can be given the line
 * where it starts (csv-parse's own `info.lines` counts a CRLF twice and tells where a record ends).
 * Holds only the bytes between the last record and the parser's read-ahead.
 */
class LineTracker {
  private readonly bufs: Buffer[] = [];
  /** Absolute offset of `bufs[0][0]`. */
  private bufStart: number;
  private fed: number;
  private pos: Position;

  constructor(from: Position) {
    this.bufStart = from.byte;
    this.fed = from.byte;
    this.pos = { ...from };
  }

  feed(chunk: Buffer): void {
    this.bufs.push(chunk);
    this.fed += chunk.length;
  }

  get position(): Position {
    return { ...this.pos };
  }

  /** The 1-based line of the next record: past the line breaks (empty lines) before it. */
  nextRecordLine(): number {
    let line = this.pos.line + 1;
    let off = this.pos.byte - this.bufStart;
    for (const b of this.bufs) {
      for (; off < b.length; off++) {
        const c = b[off];
        if (c === 0x0a) line++;
        else if (c !== 0x0d) return line;
      }
      off -= b.length;
    }
    return line;
  }

  /** Whether the bytes from the position to `byte` (a record) are valid UTF-8. */
  isUtf8Until(byte: number): boolean {
    let need = Math.min(byte, this.fed) - this.pos.byte;
    const parts: Buffer[] = [];
    let off = this.pos.byte - this.bufStart;
    for (const b of this.bufs) {
      if (need <= 0) break;
      const piece = b.subarray(off, off + need);
      parts.push(piece);
      need -= piece.length;
      off = 0;
    }
    return isUtf8(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }

  /** Moves to `byte` (never past what was fed), counting the line breaks on the way. */
  advance(byte: number): void {
    let off = this.pos.byte - this.bufStart;
    let remaining = Math.min(byte, this.fed) - this.pos.byte;
    let line = this.pos.line;
    while (remaining > 0 && this.bufs.length > 0) {
      const b = this.bufs[0]!;
      const stop = Math.min(b.length, off + remaining);
      for (let i = b.indexOf(0x0a, off); i !== -1 && i < stop; i = b.indexOf(0x0a, i + 1)) line++;
      remaining -= stop - off;
      if (stop === b.length) {
        this.bufs.shift();
        this.bufStart += b.length;
        off = 0;
      } else {
        off = stop;
      }
    }
    this.pos = { byte: this.bufStart + off, line };
  }
}

class CsvSource implements RowSource {
  header: string[] | undefined;
  private readonly stream: Readable;
  private readonly parser: ReturnType<typeof parse>;
  private readonly records: AsyncIterator<{ record: string[]; info: Info }>;
  private readonly tracker: LineTracker;

  constructor(private readonly o: SourceOptions) {
    this.header = o.header;
    this.tracker = new LineTracker(o.from);
    this.stream = o.blobs.get(o.blobKey, { start: o.from.byte });
    const tracker = this.tracker;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        tracker.feed(chunk);
        cb(null, chunk);
      },
    });
    this.parser = parse({
      // A byte-order mark can only open the file, never a resumed read.
      bom: o.from.byte === 0,
      info: true,
      relax_column_count: true,
      skip_empty_lines: true,
      record_delimiter: ['\r\n', '\n'],
      max_record_size: o.maxRecordBytes,
    });
    pipeline(this.stream, tap, this.parser, () => {});
    this.records = this.parser[Symbol.asyncIterator]();
  }

  private async read(): Promise<{ cells: string[]; line: number; end: Position; bytes: number; utf8: boolean } | undefined> {
    const line = () => this.tracker.nextRecordLine();
    let r: IteratorResult<{ record: string[]; info: Info }>;
    try {
      r = await this.records.next();
    } catch (err) {
      if (err instanceof CsvError) {
        const at = line();
        throw new JobInputError(`the CSV cannot be read from line ${at}: ${err.message}`, 'validation_failed', [
          { line: at, field: '', message: err.message },
        ], 1);
      }
      throw err;
    }
    if (r.done) return undefined;
    const start = this.tracker.position;
    const first = line();
    // csv-parse decodes invalid UTF-8 as U+FFFD without a word: the record's own bytes tell.
    const utf8 = this.tracker.isUtf8Until(this.o.from.byte + r.value.info.bytes);
    this.tracker.advance(this.o.from.byte + r.value.info.bytes);
    const end = this.tracker.position;
    return { cells: r.value.record, line: first, end, bytes: end.byte - start.byte, utf8 };
  }

  get position(): Position {
    return this.tracker.position;
  }

  async next(): Promise<SourceRecord | undefined> {
    if (!this.header) {
      const h = await this.read();
      if (!h) return undefined;
      const problems = checkCsvHeader(this.o.fields, h.cells);
      if (problems.length > 0) {
        throw new JobInputError('the CSV header does not fit the table; nothing was written', 'validation_failed', problems, problems.length);
      }
      this.header = h.cells;
    }
    const rec = await this.read();
    if (!rec) return undefined;
    const row = csvRow(this.o.fields, this.header, rec.line, rec.cells);
    if (!rec.utf8) row.problems.unshift(NOT_UTF8(rec.line));
    return { row, end: rec.end, bytes: rec.bytes };
  }

  close(): void {
    this.stream.destroy();
    this.parser.destroy();
  }
}

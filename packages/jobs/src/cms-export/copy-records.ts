import { Readable } from 'node:stream';
import type pg from 'pg';
import type { BufferPool } from '../buffer-pool';

/** The parts of node-pg's connection a COPY OUT takes over while it runs: its socket, and sending the query. */
interface PgConnection {
  stream: NodeJS.ReadableStream;
  query(text: string): void;
}

/** PostgreSQL protocol message codes seen during a COPY OUT. */
const COPY_DATA = 0x64; // 'd'
const COPY_DONE = 0x63; // 'c'
const ERROR_RESPONSE = 0x45; // 'E'
const HEADER = 5; // code byte + 4-byte length
const NEWLINE = 0x0a;
const CR = 0x0d;
/** Output is handed on in buffers of about this size: few pieces for the writer, little memory. */
export const OUT_SIZE = 256 * 1024;
/** Where a record's row id starts: CSV records begin with it, NDJSON lines with `{"id":"`. */
const ID_AT = { csv: 0, ndjson: 7 } as const;
const ID_LENGTH = 36;
/** A binary COPY's header: signature, flags (none), header extension length (none). */
const BINARY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const BINARY_HEADER = 19;
/** Before each binary row's one value: the field count (int16, 1) and the value's length (int32). */
const BINARY_ROW = 6;

/**
 * One `COPY … TO STDOUT` of `exportPageCopySql`, read straight off the connection's socket as the
 * export's bytes. PostgreSQL sends a COPY OUT as one CopyData message per row (protocol docs,
 * "COPY Operations"), so the messages are the records: no scan of the data for line ends or
 * quotes. Each record is copied once into an output buffer; a CSV record's closing `\n` becomes
 * CRLF (RFC 4180); the row id at the record's start is kept for the next page's cursor.
 *
 * NDJSON comes as a binary COPY (`format binary`) of one text column, the line: each message is
 * the field count and the value's length, then the line, which gets its `\n` here. The file's
 * header comes before the first row (in the same message) and its trailer in a message of its own.
 *
 * With a `pool`, output buffers come from it, and whoever reads this stream may hand each piece
 * back (`pool.give`) once it is done with it.
 *
 * Run as a node-pg submittable (`client.query(records.submittable())`): while the COPY
 * runs it reads the socket itself, and at CopyDone (or an error) it gives the socket back with
 * whatever it had not read, so node-pg handles CommandComplete / ErrorResponse and ReadyForQuery.
 * The stream ends once the connection is ready for its next query.
 */
export class CopyRecords extends Readable {
  /** Rows read (CopyData messages). */
  rows = 0;
  /** The row count PostgreSQL reported in its CommandComplete (`COPY n`). */
  reported: number | undefined;

  private connection: PgConnection | undefined;
  private pgDataHandler: ((chunk: Buffer) => void) | undefined;
  private readonly onData = (chunk: Buffer) => {
    try {
      this.parse(chunk);
    } catch (err) {
      this.giveBack(Buffer.alloc(0));
      this.destroy(err as Error);
    }
  };
  private detached = false;
  private finished = false;

  private readonly header = Buffer.alloc(HEADER);
  private headerHave = 0;
  /** Payload bytes of the current message still to come (after its header). */
  private remaining = 0;
  private code = 0;
  private out: Buffer;
  private at = 0;
  private rowStart = 0;
  /** Where the last whole record starts: its buffer and offset (its id is decoded only when asked). */
  private lastRow: Buffer | null = null;
  private lastRowAt = 0;
  /** The last record's id, decoded when its buffer was handed on (which may go back to a pool). */
  private lastRowId: string | null = null;
  private readonly csv: boolean;
  private readonly idAt: number;
  /** Binary COPY (NDJSON): the bytes before each message's value, read apart from the output. */
  private readonly binary: boolean;
  private binaryHeaderSeen = false;
  private readonly prefix = Buffer.alloc(BINARY_HEADER + BINARY_ROW);
  private prefixNeed = 0;
  private prefixHave = 0;
  /** Whether the current CopyData message is a row (false for a binary COPY's trailer). */
  private isRow = true;

  constructor(
    private readonly text: string,
    format: 'csv' | 'ndjson',
    private readonly pool?: BufferPool,
  ) {
    super({ highWaterMark: OUT_SIZE });
    this.csv = format === 'csv';
    this.binary = format === 'ndjson';
    this.idAt = ID_AT[format];
    this.out = pool ? pool.take() : Buffer.allocUnsafe(OUT_SIZE);
  }

  /** The row id of the last record read, or null before the first. */
  get lastId(): string | null {
    return this.lastRow ? this.lastRow.toString('latin1', this.lastRowAt + this.idAt, this.lastRowAt + this.idAt + ID_LENGTH) : this.lastRowId;
  }

  /** Hands on the output so far (true: more is welcome), keeping the last row's id apart from it. */
  private pushOut(): boolean {
    if (this.lastRow === this.out) {
      this.lastRowId = this.lastId;
      this.lastRow = null;
    }
    return this.push(this.out.subarray(0, this.at));
  }

  // --- node-pg's submittable interface ------------------------------------------------------------

  /** This reader as node-pg's `client.query` takes it. */
  submittable(): pg.Submittable {
    return this as unknown as pg.Submittable;
  }

  submit(connection: PgConnection): void {
    this.connection = connection;
    const socket = connection.stream;
    const listeners = socket.listeners('data');
    if (listeners.length !== 1) throw new Error(`expected one data listener on the connection, found ${listeners.length}`);
    this.pgDataHandler = listeners[0] as (chunk: Buffer) => void;
    socket.removeListener('data', this.pgDataHandler);
    socket.on('data', this.onData);
    connection.query(this.text);
  }

  handleError(err: Error): void {
    this.giveBack(Buffer.alloc(0));
    this.destroy(err);
  }

  handleCommandComplete(msg: { text?: string }): void {
    const m = /^COPY (\d+)/.exec(msg?.text ?? '');
    if (m) this.reported = Number(m[1]);
  }

  handleReadyForQuery(): void {
    if (this.destroyed || this.finished) return;
    this.finished = true;
    if (this.reported !== undefined && this.reported !== this.rows) {
      this.destroy(new Error(`COPY reported ${this.reported} rows but ${this.rows} were read`));
      return;
    }
    if (this.at > 0) this.pushOut();
    this.push(null);
  }

  // --- Readable ------------------------------------------------------------------------------------

  override _read(): void {
    if (this.connection && !this.detached) this.connection.stream.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // A consumer that stops mid-COPY leaves the connection mid-protocol: its owner must discard it.
    if (this.connection && !this.detached) this.connection.stream.removeListener('data', this.onData);
    cb(err);
  }

  // --- the socket ----------------------------------------------------------------------------------

  /** Consumes one socket chunk: message headers, and CopyData payloads copied into the output. */
  private parse(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.headerHave < HEADER) {
        if (this.headerHave === 0 && chunk[i] === ERROR_RESPONSE) {
          // The error is node-pg's to read: it fails the query (handleError).
          this.giveBack(chunk.subarray(i));
          return;
        }
        if (this.headerHave === 0 && i + HEADER <= chunk.length) {
          this.code = chunk[i]!;
          this.remaining = chunk.readUInt32BE(i + 1) - 4;
          this.headerHave = HEADER;
          i += HEADER;
        } else {
          // A header split across two socket chunks.
          const take = Math.min(HEADER - this.headerHave, chunk.length - i);
          chunk.copy(this.header, this.headerHave, i, i + take);
          this.headerHave += take;
          i += take;
          if (this.headerHave < HEADER) return;
          this.code = this.header[0]!;
          this.remaining = this.header.readUInt32BE(1) - 4;
        }
        if (this.code === COPY_DATA) this.startRow(this.remaining);
      }
      if (this.prefixHave < this.prefixNeed) {
        const take = Math.min(this.prefixNeed - this.prefixHave, chunk.length - i);
        chunk.copy(this.prefix, this.prefixHave, i, i + take);
        this.prefixHave += take;
        i += take;
        this.remaining -= take;
        if (this.prefixHave < this.prefixNeed) return;
        this.isRow = this.binaryPrefix();
      }
      const take = Math.min(this.remaining, chunk.length - i);
      if (this.code === COPY_DATA) {
        chunk.copy(this.out, this.at, i, i + take);
        this.at += take;
      }
      i += take;
      this.remaining -= take;
      if (this.remaining > 0) return;
      if (this.code === COPY_DATA && this.isRow) this.endRow();
      this.headerHave = 0;
      if (this.code === COPY_DONE) {
        // CommandComplete and ReadyForQuery follow: node-pg reads them, then calls handleReadyForQuery.
        this.giveBack(chunk.subarray(i));
        return;
      }
    }
  }

  /** Makes room for a record of `length` bytes (+1 for CRLF) in the output, handing on what is full. */
  private startRow(length: number): void {
    const need = length + 1;
    if (this.at + need > this.out.length) {
      // Past the high-water mark: the socket waits until the consumer reads (_read resumes it).
      if (this.at > 0 && !this.pushOut()) this.connection?.stream.pause();
      this.out = this.pool && need <= this.pool.size ? this.pool.take() : Buffer.allocUnsafe(Math.max(OUT_SIZE, need));
      this.at = 0;
    }
    this.rowStart = this.at;
    if (this.binary) {
      // The trailer (2 bytes, or 21 with the header of an empty COPY) is shorter than a row's prefix.
      this.prefixNeed = Math.min(length, (this.binaryHeaderSeen ? 0 : BINARY_HEADER) + BINARY_ROW);
      this.prefixHave = 0;
    }
  }

  /**
   * Reads a binary COPY message's prefix (the file header first of all, then the field count and
   * the value's length) and says whether a row follows; anything else than one non-null value
   * that fills the rest of the message is refused.
   */
  private binaryPrefix(): boolean {
    let p = 0;
    if (!this.binaryHeaderSeen) {
      if (this.prefixHave < BINARY_HEADER + 2 || !this.prefix.subarray(0, 11).equals(BINARY_SIGNATURE) || this.prefix.readUInt32BE(11) !== 0 || this.prefix.readUInt32BE(15) !== 0) {
        throw new Error('malformed binary COPY header');
      }
      this.binaryHeaderSeen = true;
      p = BINARY_HEADER;
    }
    const fields = this.prefixHave >= p + 2 ? this.prefix.readInt16BE(p) : 0;
    if (fields === -1 && this.prefixHave === p + 2 && this.remaining === 0) return false;
    if (fields !== 1 || this.prefixHave !== p + BINARY_ROW || this.prefix.readInt32BE(p + 2) !== this.remaining) {
      throw new Error(`malformed binary COPY row (row ${this.rows + 1})`);
    }
    return true;
  }

  private endRow(): void {
    if (this.binary) this.out[this.at++] = NEWLINE;
    const length = this.at - this.rowStart;
    if (length < this.idAt + ID_LENGTH + 1 || this.out[this.at - 1] !== NEWLINE) {
      throw new Error(`malformed export record of ${length} bytes (row ${this.rows + 1})`);
    }
    if (this.csv) {
      this.out[this.at - 1] = CR;
      this.out[this.at++] = NEWLINE;
    }
    this.lastRow = this.out;
    this.lastRowAt = this.rowStart;
    this.rows++;
  }

  /** Hands the socket back to node-pg, with the bytes of it that this did not consume. */
  private giveBack(rest: Buffer): void {
    if (this.detached || !this.connection || !this.pgDataHandler) return;
    this.detached = true;
    const socket = this.connection.stream;
    socket.removeListener('data', this.onData);
    socket.on('data', this.pgDataHandler);
    if (rest.length > 0) this.pgDataHandler(rest);
    socket.resume();
  }
}

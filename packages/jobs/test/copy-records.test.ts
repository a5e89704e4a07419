import { EventEmitter } from 'node:events';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportPageCopySql, uuidv7 } from '@platform/db';
import { BufferPool } from '../src/buffer-pool';
import { CopyRecords } from '../src/cms-export/copy-records';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

const ids = ['01a21d02-b0eb-723d-a4bb-c8808608493a', '01a21d02-b0f3-705c-9873-4fc055bef40c', '01a21d02-b0ff-726c-968d-ed54afee911d'];

// What COPY … (format csv) sends, one CopyData message per row: quoted cells may hold `\n`, `\r\n` and `""`.
const csvRows = [`${ids[0]},a,"line 1\nline 2\r\nline 3",1\n`, `${ids[1]},"He said ""hi""\n",,\n`, `${ids[2]},c,"""",-5\n`];
const csvExport = `${ids[0]},a,"line 1\nline 2\r\nline 3",1\r\n${ids[1]},"He said ""hi""\n",,\r\n${ids[2]},c,"""",-5\r\n`;
const ndjsonLines = ids.map((id, i) => `{"id":"${id}","identifier":"r${i}","title":"a \\"quoted\\"\\nline é"}`);

/** One protocol message: code, length, payload. */
function message(code: string, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const head = Buffer.alloc(5);
  head.write(code, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/**
 * A binary COPY of one text column, as PostgreSQL sends it: the file header in the first row's
 * message (or in the trailer's, for no rows), then one message per row, then the trailer.
 */
function binaryMessages(values: (string | null)[], fields = 1): Buffer[] {
  const header = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
  const rows = values.map((v, i) => {
    const value = v === null ? Buffer.alloc(0) : Buffer.from(v, 'utf8');
    const head = Buffer.alloc(6);
    head.writeInt16BE(fields, 0);
    head.writeInt32BE(v === null ? -1 : value.length, 2);
    return message('d', Buffer.concat([i === 0 ? header : Buffer.alloc(0), head, value]));
  });
  return [...rows, message('d', Buffer.concat([values.length === 0 ? header : Buffer.alloc(0), Buffer.from([0xff, 0xff])]))];
}

/** What a server sends for a COPY OUT of `rows` (text, or binary messages), and then what node-pg must read itself. */
function copyOut(rows: string[] | Buffer[], count = rows.length) {
  const data = rows.map((r) => (typeof r === 'string' ? message('d', r) : r));
  const copy = Buffer.concat([message('H', Buffer.from([0, 0, 1, 0, 0])), ...data, message('c')]);
  const after = Buffer.concat([message('C', `COPY ${count}\0`), message('Z', 'I')]);
  return { copy, after, bytes: Buffer.concat([copy, after]) };
}

/**
 * Feeds `bytes` to a CopyRecords through a connection whose socket delivers them cut at `cuts`,
 * the way node-pg's socket would, and says what came out and what was handed back to node-pg.
 */
async function feed(format: 'csv' | 'ndjson', bytes: Buffer, cuts: number[], reported: number) {
  const { records, sent, handedBack } = started(format, bytes, cuts, reported);
  const out = Buffer.concat(await records.toArray()).toString('utf8');
  return { sent, out, rows: records.rows, lastId: records.lastId, handedBack: Buffer.concat(handedBack) };
}

/** A CopyRecords fed `bytes` as `feed` does, its output not read yet. */
function started(format: 'csv' | 'ndjson', bytes: Buffer, cuts: number[], reported: number, pool?: BufferPool) {
  const socket = Object.assign(new EventEmitter(), { pause() {}, resume() {} });
  const handedBack: Buffer[] = [];
  socket.on('data', (b: Buffer) => handedBack.push(Buffer.from(b)));
  const sent: string[] = [];
  const records = new CopyRecords('copy (…) to stdout', format, pool);
  (records as unknown as { submit(c: unknown): void }).submit({ stream: socket, query: (text: string) => sent.push(text) });
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut > at) socket.emit('data', bytes.subarray(at, cut));
    at = cut;
  }
  // What node-pg does once it has read CommandComplete and ReadyForQuery.
  records.handleCommandComplete({ text: `COPY ${reported}` });
  records.handleReadyForQuery();
  return { records, sent, handedBack };
}

describe('CopyRecords (a COPY OUT read off the socket as export records)', () => {
  it('turns each CSV row message into a CRLF record, wherever the socket cuts the stream', async () => {
    const { bytes, after } = copyOut(csvRows);
    const whole = await feed('csv', bytes, [], 3);
    expect(whole).toEqual({ sent: ['copy (…) to stdout'], out: csvExport, rows: 3, lastId: ids[2], handedBack: after });
    for (let cut = 1; cut < bytes.length; cut++) expect(await feed('csv', bytes, [cut], 3), `cut at ${cut}`).toEqual(whole);
    // Every byte its own chunk.
    expect(await feed('csv', bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1), 3)).toEqual(whole);
  });

  it('ends each NDJSON line of a binary COPY with \\n and reads the last row id at its place in the line', async () => {
    const { bytes, after } = copyOut(binaryMessages(ndjsonLines), 3);
    const whole = await feed('ndjson', bytes, [], 3);
    expect(whole).toMatchObject({ out: ndjsonLines.map((l) => `${l}\n`).join(''), rows: 3, lastId: ids[2], handedBack: after });
    for (let cut = 1; cut < bytes.length; cut++) expect(await feed('ndjson', bytes, [cut], 3), `cut at ${cut}`).toEqual(whole);
    expect(await feed('ndjson', bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1), 3)).toEqual(whole);
  });

  it('reads a binary COPY of no rows (its header and trailer in one message) as nothing', async () => {
    const { bytes, after } = copyOut(binaryMessages([]), 0);
    for (const cuts of [[], [7], [12], [20], [26]]) {
      expect(await feed('ndjson', bytes, cuts, 0), String(cuts)).toMatchObject({ out: '', rows: 0, lastId: null, handedBack: after });
    }
  });

  it('refuses a binary COPY that is not one non-null value per row, or has no header', async () => {
    await expect(feed('ndjson', copyOut(binaryMessages([ndjsonLines[0]!, null]), 2).bytes, [], 2)).rejects.toThrow('malformed binary COPY row (row 2)');
    await expect(feed('ndjson', copyOut(binaryMessages(ndjsonLines, 2), 3).bytes, [], 3)).rejects.toThrow('malformed binary COPY row (row 1)');
    await expect(feed('ndjson', copyOut(ndjsonLines.map((l) => `${l}\n`)).bytes, [], 3)).rejects.toThrow('malformed binary COPY header');
  });

  it('hands an error response to node-pg, and fails when the rows read are not the rows reported', async () => {
    const { copy } = copyOut(csvRows.slice(0, 1));
    const error = message('E', 'SERROR\0C57014\0Mcanceled\0\0');
    const bytes = Buffer.concat([copy.subarray(0, copy.length - 5), error]);
    const socket = Object.assign(new EventEmitter(), { pause() {}, resume() {} });
    const handedBack: Buffer[] = [];
    socket.on('data', (b: Buffer) => handedBack.push(Buffer.from(b)));
    const records = new CopyRecords('copy (…) to stdout', 'csv');
    (records as unknown as { submit(c: unknown): void }).submit({ stream: socket, query: () => {} });
    socket.emit('data', bytes);
    expect(Buffer.concat(handedBack)).toEqual(error);

    await expect(feed('csv', copyOut(csvRows).bytes, [], 4)).rejects.toThrow('COPY reported 4 rows but 3 were read');
  });

  it('takes its buffers from a pool, and keeps the last row id when its buffer goes back and is reused', async () => {
    const pool = new BufferPool(64, 4);
    // Rows of 40 bytes: one per 64-byte buffer.
    const rows = (tag: string) => ids.map((id) => `${id},${tag}\n`);
    const read = async (tag: string) => {
      const { records } = started('csv', copyOut(rows(tag)).bytes, [], 3, pool);
      let text = '';
      const pieces = new Set<ArrayBufferLike>();
      for await (const piece of records as AsyncIterable<Buffer>) {
        text += piece.toString('utf8');
        pieces.add(piece.buffer);
        pool.give(piece);
      }
      return { records, text, pieces };
    };
    const first = await read('a');
    expect(first.text).toBe(rows('a').map((r) => r.replace('\n', '\r\n')).join(''));
    // The second COPY writes its rows into the buffers the first one's rows were in.
    const second = await read('b');
    expect(second.text).toBe(rows('b').map((r) => r.replace('\n', '\r\n')).join(''));
    expect([...second.pieces].some((b) => first.pieces.has(b))).toBe(true);
    expect([first.records.lastId, second.records.lastId]).toEqual([ids[2], ids[2]]);
    // A reused buffer is overwritten: what stays right is the id kept apart, not the buffer.
    const { records } = started('csv', copyOut([`${ids[0]},x\n`]).bytes, [], 1, pool);
    for await (const piece of records as AsyncIterable<Buffer>) pool.give(piece);
    const other = started('csv', copyOut([`${ids[1]},y\n`]).bytes, [], 1, pool).records;
    for await (const piece of other as AsyncIterable<Buffer>) void piece;
    expect(records.lastId).toBe(ids[0]);
  });

  it('refuses a record too short to hold its row id', async () => {
    await expect(feed('csv', copyOut(['short,row\n']).bytes, [], 1)).rejects.toThrow(/malformed export record/);
  });
});

describe('CopyRecords on a real PostgreSQL', () => {
  let t: TestEnv;
  beforeAll(async () => {
    t = await createTestEnv();
  });
  afterAll(async () => t?.cleanup());

  it('reads rows of any size, through a slow reader, and leaves the connection ready', async () => {
    const big = 'é'.repeat(600_000); // 1.2 MB: larger than an output buffer and many socket reads
    const client = await t.database.pool.connect();
    try {
      const records = new CopyRecords(
        `copy (select v.id, v.cell from (values ('${ids[0]}'::uuid, 'a "quoted"\nline'), ('${ids[1]}'::uuid, '${big}'), ('${ids[2]}'::uuid, 'z')) v(id, cell) order by v.id) to stdout (format csv)`,
        'csv',
      );
      client.query(records.submittable());
      const pieces: Buffer[] = [];
      for await (const piece of records as AsyncIterable<Buffer>) {
        pieces.push(piece);
        await new Promise((r) => setTimeout(r, 5)); // the socket must wait for the reader
      }
      const text = Buffer.concat(pieces).toString('utf8');
      expect(text.endsWith('\r\n')).toBe(true);
      expect(parse(text, { relax_column_count: false })).toEqual([
        [ids[0], 'a "quoted"\nline'],
        [ids[1], big],
        [ids[2], 'z'],
      ]);
      expect([records.rows, records.lastId]).toEqual([3, ids[2]]);
      expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
    } finally {
      client.release();
    }
  });

  it('holds the socket while its reader is behind: what waits in memory stays bounded', async () => {
    const client = await t.database.pool.connect();
    try {
      // 8 MB of rows, read slowly: without pausing the socket they would all pile up in the stream.
      const records = new CopyRecords(
        `copy (select '${ids[0]}' || repeat('x', 1000) from generate_series(1, 8000)) to stdout (format csv)`,
        'csv',
      );
      client.query(records.submittable());
      let most = 0;
      let bytes = 0;
      for await (const piece of records as AsyncIterable<Buffer>) {
        bytes += piece.length;
        await new Promise((r) => setTimeout(r, 10));
        most = Math.max(most, records.readableLength);
      }
      expect(bytes).toBe(8000 * 1038);
      expect(most).toBeLessThan(2 * 1024 * 1024);
    } finally {
      client.release();
    }
  });

  it('exports NDJSON lines exact as a binary COPY, converted to UTF-8 in the query when the server is not', async () => {
    const client = await t.database.pool.connect();
    const table = uuidv7();
    const team = uuidv7();
    try {
      // A database of its own (a clone per test file): rows need no table behind them here.
      await client.query('alter table cms_rows drop constraint if exists cms_rows_table_id_cms_tables_id_fk');
      const drafts = [
        { title: 'é 😀 "q" \\ back\nline\u0001\u0002', n: -1.5, ok: true, extra: 'not a field' },
        { n: 0 },
        { title: '=1+2', ok: false },
      ];
      for (const [i, d] of drafts.entries()) {
        await client.query('insert into cms_rows (id, table_id, team_id, identifier, draft_data) values ($1, $2, $3, $4, $5)', [ids[i], table, team, `r"${i}`, d]);
      }
      const fields = [
        { name: 'title', type: 'text' as const },
        { name: 'n', type: 'number' as const },
        { name: 'ok', type: 'boolean' as const },
      ];
      const read = async (utf8Server: boolean) => {
        const records = new CopyRecords(exportPageCopySql({ tableId: table, teamId: team, published: false, fields, format: 'ndjson', limit: 10, utf8Server }), 'ndjson');
        client.query(records.submittable());
        const text = Buffer.concat(await records.toArray()).toString('utf8');
        expect([records.rows, records.lastId]).toEqual([3, ids[2]]);
        return text;
      };
      const text = await read(true);
      expect(await read(false)).toBe(text);
      expect(text.endsWith('\n')).toBe(true);
      const lines = text.slice(0, -1).split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toEqual(
        drafts.map((d, i) => ({ id: ids[i], identifier: `r"${i}`, title: (d as { title?: string }).title ?? null, n: d.n ?? null, ok: (d as { ok?: boolean }).ok ?? null })),
      );
      expect(lines.map((l) => Object.keys(l).join())).toEqual(Array(3).fill('id,identifier,title,n,ok'));
    } finally {
      client.release();
    }
  });

  it("fails with the server's error when the COPY fails half-way, and the connection still answers", async () => {
    const client = await t.database.pool.connect();
    try {
      await client.query('set statement_timeout = 200');
      const records = new CopyRecords(
        `copy (select '${ids[0]}'::text || pg_sleep(case when n = 3 then 1 else 0 end)::text from generate_series(1, 5) n) to stdout (format csv)`,
        'csv',
      );
      client.query(records.submittable());
      const read = async () => {
        for await (const _ of records as AsyncIterable<Buffer>);
      };
      await expect(read()).rejects.toThrow(/statement timeout/);
      await client.query('reset statement_timeout');
      expect((await client.query('select 2 as two')).rows).toEqual([{ two: 2 }]);
    } finally {
      client.release();
    }
  });
});

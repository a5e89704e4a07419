import { EventEmitter } from 'node:events';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CopyRecords } from '../src/cms-export/copy-records';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

const ids = ['01a21d02-b0eb-723d-a4bb-c8808608493a', '01a21d02-b0f3-705c-9873-4fc055bef40c', '01a21d02-b0ff-726c-968d-ed54afee911d'];

// What COPY … (format csv) sends, one CopyData message per row: quoted cells may hold `\n`, `\r\n` and `""`.
const csvRows = [`${ids[0]},a,"line 1\nline 2\r\nline 3",1\n`, `${ids[1]},"He said ""hi""\n",,\n`, `${ids[2]},c,"""",-5\n`];
const csvExport = `${ids[0]},a,"line 1\nline 2\r\nline 3",1\r\n${ids[1]},"He said ""hi""\n",,\r\n${ids[2]},c,"""",-5\r\n`;
const ndjsonRows = ids.map((id, i) => `{"id":"${id}","identifier":"r${i}","title":"a \\"quoted\\"\\nline é"}\n`);

/** One protocol message: code, length, payload. */
function message(code: string, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const head = Buffer.alloc(5);
  head.write(code, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** What a server sends for a COPY OUT of `rows`, and then what node-pg must read itself. */
function copyOut(rows: string[]) {
  const copy = Buffer.concat([message('H', Buffer.from([0, 0, 1, 0, 0])), ...rows.map((r) => message('d', r)), message('c')]);
  const after = Buffer.concat([message('C', `COPY ${rows.length}\0`), message('Z', 'I')]);
  return { copy, after, bytes: Buffer.concat([copy, after]) };
}

/**
 * Feeds `bytes` to a CopyRecords through a connection whose socket delivers them cut at `cuts`,
 * the way node-pg's socket would, and says what came out and what was handed back to node-pg.
 */
async function feed(format: 'csv' | 'ndjson', bytes: Buffer, cuts: number[], reported: number) {
  const socket = Object.assign(new EventEmitter(), { pause() {}, resume() {} });
  const handedBack: Buffer[] = [];
  socket.on('data', (b: Buffer) => handedBack.push(Buffer.from(b)));
  const sent: string[] = [];
  const records = new CopyRecords('copy (…) to stdout', format);
  (records as unknown as { submit(c: unknown): void }).submit({ stream: socket, query: (text: string) => sent.push(text) });
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    if (cut > at) socket.emit('data', bytes.subarray(at, cut));
    at = cut;
  }
  // What node-pg does once it has read CommandComplete and ReadyForQuery.
  records.handleCommandComplete({ text: `COPY ${reported}` });
  records.handleReadyForQuery();
  const out = Buffer.concat(await records.toArray()).toString('utf8');
  return { sent, out, rows: records.rows, lastId: records.lastId, handedBack: Buffer.concat(handedBack) };
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

  it('passes NDJSON lines through and reads the last row id at its place in the line', async () => {
    const { bytes, after } = copyOut(ndjsonRows);
    const whole = await feed('ndjson', bytes, [], 3);
    expect(whole).toMatchObject({ out: ndjsonRows.join(''), rows: 3, lastId: ids[2], handedBack: after });
    for (let cut = 1; cut < bytes.length; cut++) expect(await feed('ndjson', bytes, [cut], 3), `cut at ${cut}`).toEqual(whole);
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

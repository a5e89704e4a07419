import { describe, expect, it } from 'vitest';
import { ExportRecords } from '../src/cms-export/format';

const ids = ['01a21d02-b0eb-723d-a4bb-c8808608493a', '01a21d02-b0f3-705c-9873-4fc055bef40c', '01a21d02-b0ff-726c-968d-ed54afee911d'];

// What COPY … (format csv) writes: `\n` after each record, quoted cells may hold `\n`, `\r\n` and `""`.
const csvCopy = `${ids[0]},a,"line 1\nline 2\r\nline 3",1\n${ids[1]},"He said ""hi""\n",,\n${ids[2]},c,"""",-5\n`;
const csvExport = `${ids[0]},a,"line 1\nline 2\r\nline 3",1\r\n${ids[1]},"He said ""hi""\n",,\r\n${ids[2]},c,"""",-5\r\n`;
const ndjson = ids.map((id, i) => `{"id":"${id}","identifier":"r${i}","title":"a \\"quoted\\"\\nline"}\n`).join('');

/** Feeds `input` cut at the given offsets. */
function feed(format: 'csv' | 'ndjson', input: string, cuts: number[]) {
  const bytes = Buffer.from(input, 'utf8');
  const records = new ExportRecords(format);
  const out: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(records.push(bytes.subarray(at, cut)));
    at = cut;
  }
  return { text: Buffer.concat(out).toString('utf8'), rows: records.rows, lastId: records.lastId, complete: records.complete };
}

describe('ExportRecords (a page of COPY output into the export bytes)', () => {
  it('turns CSV record ends into CRLF, keeping line breaks inside quoted cells, wherever the chunks are cut', () => {
    const whole = feed('csv', csvCopy, []);
    expect(whole).toEqual({ text: csvExport, rows: 3, lastId: ids[2], complete: true });
    for (let cut = 1; cut < Buffer.byteLength(csvCopy); cut++) {
      expect(feed('csv', csvCopy, [cut]), `cut at ${cut}`).toEqual(whole);
    }
    // Every byte its own chunk.
    expect(feed('csv', csvCopy, Array.from({ length: Buffer.byteLength(csvCopy) - 1 }, (_, i) => i + 1))).toEqual(whole);
  });

  it('passes NDJSON lines through and reads the last row id at its place in the line', () => {
    const whole = feed('ndjson', ndjson, []);
    expect(whole).toEqual({ text: ndjson, rows: 3, lastId: ids[2], complete: true });
    for (let cut = 1; cut < Buffer.byteLength(ndjson); cut++) expect(feed('ndjson', ndjson, [cut]), `cut at ${cut}`).toEqual(whole);
  });

  it('says when the output stopped inside a record (a page cut short)', () => {
    expect(feed('csv', csvCopy.slice(0, 60), []).complete).toBe(false);
    expect(feed('csv', `${ids[0]},"open\n`, []).complete).toBe(false);
    expect(feed('ndjson', ndjson.slice(0, -1), [])).toMatchObject({ rows: 2, lastId: ids[1], complete: false });
    expect(feed('csv', '', [])).toEqual({ text: '', rows: 0, lastId: null, complete: true });
  });
});

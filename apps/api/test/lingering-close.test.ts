import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let api: FastifyInstance;
let port: number;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  await api.listen({ host: '127.0.0.1', port: 0 });
  port = (api.server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

/**
 * Sends `total` bytes of body on a raw socket without reading anything until all of it is sent
 * (or the server refuses more), then reads whatever the server answered.
 */
async function sendWithoutReading(total: number): Promise<{ answer: string; error?: string }> {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.pause(); // the answer stays in the kernel's buffer until the whole body is written
  let error: string | undefined;
  sock.on('error', (e) => (error ??= (e as NodeJS.ErrnoException).code ?? String(e)));
  sock.write(
    [`POST /v1/admin/teams HTTP/1.1`, 'host: x', `authorization: Bearer ${ADMIN_TOKEN}`, 'content-type: application/json', `content-length: ${total}`, 'connection: close', '', ''].join('\r\n'),
  );
  const piece = Buffer.alloc(64 * 1024, 0x20);
  for (let sent = 0; sent < total && !sock.destroyed && !error; sent += piece.length) {
    if (!sock.write(piece)) await Promise.race([new Promise((r) => sock.once('drain', r)), sleep(500)]);
  }
  await sleep(300);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.resume();
  await Promise.race([new Promise((r) => sock.once('close', r)), sleep(5_000)]);
  sock.destroy();
  return { answer: Buffer.concat(chunks).toString('latin1'), error };
}

describe('lingering close', () => {
  it('a body refused part-way (413) still reaches a client that reads only after sending everything', async () => {
    // 8 MiB against a 1 MiB limit: Node alone would close with megabytes unread and reset the
    // connection, and the client's kernel would drop the 413 it had not read yet.
    const { answer, error } = await sendWithoutReading(8 * 1024 * 1024);
    expect(answer.split('\r\n')[0], `socket error: ${error}`).toBe('HTTP/1.1 413 Payload Too Large');
    expect(answer).toContain('"code":"payload_too_large"');
    expect(answer.toLowerCase()).toContain('connection: close');
  });

  // While the connection lingers its parser still reads, and Node would run the next request.
  it('a request pipelined behind a refused body does not run', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.on('error', () => {});
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    const big = 2 * 1024 * 1024;
    const second = JSON.stringify({ name: 'pipelined-after-413' });
    sock.write(
      [`POST /v1/admin/teams HTTP/1.1`, 'host: x', `authorization: Bearer ${ADMIN_TOKEN}`, 'content-type: application/json', `content-length: ${big}`, '', ''].join('\r\n'),
    );
    sock.write(Buffer.alloc(big, 0x20));
    sock.write(
      [`POST /v1/admin/teams HTTP/1.1`, 'host: x', `authorization: Bearer ${ADMIN_TOKEN}`, 'content-type: application/json', `content-length: ${Buffer.byteLength(second)}`, '', second].join('\r\n'),
    );
    await Promise.race([new Promise((r) => sock.once('close', r)), sleep(6_000)]);
    sock.destroy();
    expect(Buffer.concat(chunks).toString('latin1').split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
    const teams = await t.database.pool.query(`select count(*)::int as n from teams where name = 'pipelined-after-413'`);
    expect(teams.rows[0].n).toBe(0);
  });

  it('the server still cuts a client that keeps sending: the connection ends within seconds', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.on('error', () => {});
    sock.write(['POST /v1/admin/teams HTTP/1.1', 'host: x', 'content-type: application/json', 'content-length: 1000000000', '', ''].join('\r\n'));
    let closed = false;
    sock.once('close', () => (closed = true));
    const started = Date.now();
    const piece = Buffer.alloc(16 * 1024, 0x20);
    while (!closed && Date.now() - started < 15_000) {
      sock.write(piece);
      await sleep(5);
    }
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

import { Transform } from 'node:stream';
import zlib from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { AppError } from '../errors';

const tooLarge = () => new AppError('payload_too_large', 'the request body is over the size limit (measured after decompression)');

/**
 * Request bodies may be gzip-encoded; the route's body limit counts decoded bytes, so a small
 * compressed body that inflates past it is refused (413).
 *
 * The decoded stream stops at the limit by itself. Fastify's body reader also counts, but once it
 * has answered 413 it merely stops listening: the gunzip went on inflating the rest of the body
 * into the void (a 2 MB gzip of spaces kept a core busy for seconds after its 413).
 */
export function registerGzipBodies(app: FastifyInstance): void {
  app.addHook('preParsing', async (req, _reply, payload) => {
    const enc = (req.headers['content-encoding'] ?? 'identity').toString().trim().toLowerCase();
    if (enc === 'identity' || enc === '') return payload;
    if (enc !== 'gzip' && enc !== 'x-gzip') {
      throw new AppError('unsupported_media_type', `Content-Encoding ${enc} is not supported; use gzip or none`);
    }
    const limit = req.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? Infinity;
    let encoded = 0;
    let decoded = 0;
    const gunzip = zlib.createGunzip();
    const body = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        decoded += chunk.length;
        if (decoded > limit) cb(tooLarge());
        else cb(null, chunk);
      },
    });
    // Fastify's body reader compares this with the limit too.
    Object.defineProperty(body, 'receivedEncodedLength', { get: () => encoded });
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      // The request itself stays open, so the 413 or 400 can still be sent; what is left of it is
      // read and dropped without decoding.
      payload.unpipe(gunzip);
      gunzip.destroy();
      payload.resume();
    };
    payload.on('data', (c: Buffer) => {
      encoded += c.length;
    });
    payload.on('error', (e) => body.destroy(e));
    gunzip.on('error', (e) => body.destroy(e));
    // Also the listener of last resort: Fastify drops its own once it has answered.
    body.on('error', stop);
    body.on('close', stop);
    payload.pipe(gunzip).pipe(body);
    // Content-Length counts encoded bytes; left in place, Fastify would hold the limit against it.
    delete req.headers['content-length'];
    return body;
  });
}

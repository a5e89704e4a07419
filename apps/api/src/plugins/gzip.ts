import zlib from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { AppError } from '../errors';

/**
 * Request bodies may be gzip-encoded. The decoded stream replaces the raw one, so the body limit
 * counts decoded bytes: a small compressed body that inflates past the limit is refused (413).
 */
export function registerGzipBodies(app: FastifyInstance): void {
  app.addHook('preParsing', async (req, _reply, payload) => {
    const enc = (req.headers['content-encoding'] ?? 'identity').toString().trim().toLowerCase();
    if (enc === 'identity' || enc === '') return payload;
    if (enc !== 'gzip' && enc !== 'x-gzip') {
      throw new AppError('unsupported_media_type', `Content-Encoding ${enc} is not supported; use gzip or none`);
    }
    const gunzip = zlib.createGunzip() as zlib.Gunzip & { receivedEncodedLength: number };
    gunzip.receivedEncodedLength = 0;
    payload.on('data', (c: Buffer) => {
      gunzip.receivedEncodedLength += c.length;
    });
    payload.on('error', (e) => gunzip.destroy(e));
    gunzip.on('error', () => {});
    payload.pipe(gunzip);
    // Fastify compares Content-Length with the decoded length unless told the encoded one.
    delete req.headers['content-length'];
    return gunzip;
  });
}

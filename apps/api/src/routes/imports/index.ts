import { createHash } from 'node:crypto';
import { finished, Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { getCmsTable, UUID_RE } from '@platform/db';
import { acceptDeps, acceptJob, fingerprint } from '../../accept-job';
import type { ApiDeps } from '../../deps';
import { AppError, notFound } from '../../errors';
import { teamAuth } from '../../plugins/auth';

const MEDIA_TYPES = { csv: 'text/csv', ndjson: 'application/x-ndjson' } as const;
type Format = keyof typeof MEDIA_TYPES;
const FORMATS = Object.keys(MEDIA_TYPES) as Format[];

const tooLarge = (max: number) =>
  new AppError('payload_too_large', `the file is over the import limit of ${max} bytes (measured after decompression)`);

/**
 * Reads a request body once, counting and hashing the (decoded) bytes on the way, and hands them to
 * `sink` (the blob store) or drops them. Past `max` bytes it stops with 413; the blob store then
 * removes its partial file. The request stream itself is never destroyed, so the answer can still
 * be sent; what is left of the body is read and dropped.
 */
async function receive(body: Readable, max: number, sink?: (stream: Readable) => Promise<unknown>) {
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > max) return cb(tooLarge(max));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  // The sink may take a moment before it reads (the blob store makes its folder first): an error
  // meanwhile is kept here rather than thrown as an unhandled 'error' event.
  let failure: unknown;
  meter.on('error', (err) => {
    failure ??= err;
  });
  // An aborted upload or a bad gzip stream must end the read with an error, not leave it hanging.
  finished(body, { writable: false }, (err) => {
    if (err) meter.destroy(err);
  });
  body.pipe(meter);
  try {
    if (sink) await sink(meter);
    else await pipeline(meter, new Writable({ write: (_c, _e, cb) => cb() }));
    if (failure) throw failure;
  } catch (err) {
    body.unpipe(meter);
    body.resume();
    throw failure ?? err;
  }
  return { size, sha256: hash.digest('hex') };
}

/**
 * `POST /v1/cms-tables/:tableId/imports`: the body is the file itself (CSV or NDJSON), streamed to
 * the blob store without being buffered, then a `cms.import` job is accepted. In its own plugin
 * context so that only this route takes these media types, and takes no other: JSON or text bodies
 * answer 415 before anything is read.
 */
export const importRoutes: FastifyPluginAsyncZod<ApiDeps> = async (app, deps) => {
  const db = deps.database.db;
  const max = deps.config.importMaxBytes;
  app.addHook('onRequest', teamAuth(db, deps.config.adminToken));
  app.removeAllContentTypeParsers();
  // The (decoded, see plugins/gzip.ts) body stream goes to the handler untouched.
  app.addContentTypeParser([MEDIA_TYPES.csv, MEDIA_TYPES.ndjson], (_req, payload, done) => done(null, payload));

  app.post(
    '/v1/cms-tables/:tableId/imports',
    {
      // Counted by `receive` for plain bodies; the gzip hook holds decoded bodies to it.
      bodyLimit: max,
      schema: {
        tags: ['heavy'],
        summary: 'Import a CSV or NDJSON file into a CMS table, as a job',
        description:
          'The body is the file itself (text/csv or application/x-ndjson, optionally gzip-encoded). ' +
          '`format` defaults to what the Content-Type says and must agree with it.',
        consumes: [MEDIA_TYPES.csv, MEDIA_TYPES.ndjson],
        params: z.object({ tableId: z.string() }),
        querystring: z.object({
          format: z.enum(['csv', 'ndjson']).optional(),
          mode: z.enum(['insert', 'upsert']).default('insert'),
          onError: z.enum(['abort', 'skip']).default('abort'),
        }),
      },
    },
    async (req, reply) => {
      const table = UUID_RE.test(req.params.tableId) ? await getCmsTable(db, req.params.tableId, req.teamId) : undefined;
      if (!table) throw notFound('CMS table');
      const media = req.mediaType?.toLowerCase();
      const format = FORMATS.find((f) => MEDIA_TYPES[f] === media);
      if (!format) throw new AppError('unsupported_media_type', `send the file as ${MEDIA_TYPES.csv} or ${MEDIA_TYPES.ndjson}`);
      if (req.query.format && req.query.format !== format) {
        throw new AppError('unsupported_media_type', `?format=${req.query.format} contradicts Content-Type ${media}`);
      }
      const body = req.body as Readable;
      const declared = Number(req.headers['content-length']);
      if (declared > max) {
        reply.header('connection', 'close');
        throw tooLarge(max);
      }
      const { mode, onError } = req.query;
      const fp = (sha256: string) => fingerprint(['imports', table.id, { format, mode, onError }, sha256]);
      const blobKey = (jobId: string) => `imports/${jobId}.${format === 'csv' ? 'csv' : 'ndjson'}`;
      const fail = (err: unknown) => {
        // Whatever of the body is still coming is not wanted.
        if (err instanceof AppError && err.code === 'payload_too_large') reply.header('connection', 'close');
        throw err;
      };
      return acceptJob(acceptDeps(deps), req, reply, {
        type: 'cms.import',
        // The Idempotency-Key was seen before: hash the body to compare, without storing it.
        fingerprint: async () => fp((await receive(body, max).catch(fail)).sha256),
        prepare: async (jobId) => {
          const key = blobKey(jobId);
          const got = await receive(body, max, (s) => deps.blobs.put(key, s)).catch(fail);
          return {
            payload: { tableId: table.id, blobKey: key, format, mode, onError, sizeBytes: got.size },
            total: null,
            fingerprint: fp(got.sha256),
          };
        },
        discard: (jobId) => deps.blobs.delete(blobKey(jobId)),
      });
    },
  );
};

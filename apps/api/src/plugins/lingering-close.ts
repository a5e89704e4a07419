import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';

type LingeringSocket = Socket & { lingering?: true };

/** How long a connection whose request body was refused part-way keeps draining before it is cut. */
export const LINGER_MS = 3_000;

/**
 * Lingering close, for answers sent before the request body has fully arrived (a 413 for a body
 * over the limit, a 400 for bad bytes, an early 401/404/415).
 *
 * Node closes such a connection as soon as the answer is written. The client is usually still
 * sending, and a socket closed with unread bytes in its receive buffer sends a TCP reset, which
 * makes the client's kernel discard the answer it had not read yet: the client sees "connection
 * reset" instead of the 413 (seen in the fault suite on a loaded machine). As nginx and Go's
 * net/http do, this half-closes instead (FIN after the answer), keeps reading and discarding
 * what the client still sends, and closes once the client closes its side or after LINGER_MS.
 * Such a connection is never kept alive: draining a body of unbounded length is not worth it.
 */
export function registerLingeringClose(app: FastifyInstance): void {
  // While it lingers, the connection's parser still reads what follows the refused body, and Node
  // runs a request pipelined behind it (seen in apps/api/test/lingering-close.test.ts: a team got
  // created). Its answer could never be written: such a request is dropped with the connection.
  app.addHook('onRequest', async (request, reply) => {
    const socket = request.raw.socket as LingeringSocket | null;
    if (socket?.lingering) {
      socket.destroy();
      reply.hijack();
    }
  });
  app.addHook('onSend', async (request, reply, payload) => {
    const req = request.raw;
    const socket = req.socket as LingeringSocket | null;
    if (req.complete || !socket || socket.lingering) return payload;
    // Kept alive, Node would read the rest of the body to reuse the connection, however long the
    // client keeps sending: this connection ends instead, after at most LINGER_MS of draining.
    void reply.header('connection', 'close');
    socket.lingering = true;
    socket.destroySoon = function lingeringClose(this: Socket) {
      this.end();
      const timer = setTimeout(() => this.destroy(), LINGER_MS);
      timer.unref();
      this.once('close', () => clearTimeout(timer));
      this.once('end', () => this.destroy());
      // Pull the rest off the wire: the request stream may have been left paused by its parser.
      req.resume();
      this.resume();
    };
    return payload;
  });
}

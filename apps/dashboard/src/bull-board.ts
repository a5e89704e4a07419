import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';

export const BOARD_PATH = '/queues';

/**
 * bull-board at /queues. Its adapters' `readOnlyMode` is fixed per queue, not per request, so
 * the board is built writable and viewers are held back in two places: auth.ts answers 403 to
 * any mutating request of theirs (the enforcement), and below their copy of the queue list says
 * `readOnlyMode: true`, so the UI hides the buttons they could not use anyway (the courtesy).
 */
export async function registerBullBoard(app: FastifyInstance, queues: Queue[]): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q)),
    serverAdapter,
    options: {
      uiConfig: { boardTitle: 'Platform queues', hideDocsLink: true, miscLinks: [{ text: 'Overview', url: '/' }] },
    },
  });

  await app.register(
    async (board) => {
      board.addHook('onSend', async (request, reply, payload) => {
        // Its page asks Google for a font: not for staff browsers (no requests leave the site); the
        // UI falls back to a local font.
        if (typeof payload === 'string' && String(reply.getHeader('content-type') ?? '').startsWith('text/html')) {
          return payload.replace(/<link[^>]*fonts\.(googleapis|gstatic)\.com[^>]*>\s*/g, '');
        }
        if (request.staff?.role === 'operator' || request.method !== 'GET') return payload;
        if (request.routeOptions.url !== `${BOARD_PATH}/api/queues` || typeof payload !== 'string') return payload;
        if (reply.statusCode !== 200) return payload;
        try {
          const body = JSON.parse(payload) as { queues?: Array<Record<string, unknown>> };
          for (const q of body.queues ?? []) {
            q.readOnlyMode = true;
            q.allowRetries = false;
            q.allowCompletedRetries = false;
          }
          return JSON.stringify(body);
        } catch {
          return payload;
        }
      });
      await board.register(serverAdapter.registerPlugin(), { prefix: BOARD_PATH });
    },
  );
}

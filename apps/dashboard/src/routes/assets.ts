import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { sendError } from '../errors';

/**
 * Static files of the pages, served by this process: the chart library straight from
 * node_modules (uPlot, a maintained npm package; no CDN, so no request leaves the machine) and
 * our two small scripts. Read once at start; behind the same sign-in as every page.
 */

const require = createRequire(import.meta.url);
const OWN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../ui/assets');

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

function load(file: string, type: string): Asset {
  const body = readFileSync(file);
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"` };
}

export function loadAssets(): Map<string, Asset> {
  return new Map([
    ['uPlot.iife.min.js', load(require.resolve('uplot/dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8')],
    ['uPlot.min.css', load(require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8')],
    ['charts.js', load(path.join(OWN, 'charts.js'), 'text/javascript; charset=utf-8')],
    ['dashboard.js', load(path.join(OWN, 'dashboard.js'), 'text/javascript; charset=utf-8')],
  ]);
}

/** What a chart page links. */
export const CHART_ASSETS = {
  scripts: ['/assets/uPlot.iife.min.js', '/assets/charts.js', '/assets/dashboard.js'],
  styles: ['/assets/uPlot.min.css'],
};
export const PAGE_ASSETS = { scripts: ['/assets/dashboard.js'] };

export async function assetRoutes(app: FastifyInstance): Promise<void> {
  const assets = loadAssets();
  app.get<{ Params: { name: string } }>('/assets/:name', async (request, reply) => {
    const asset = assets.get(request.params.name);
    if (!asset) return sendError(reply, 'not_found', 'no such asset');
    reply.header('etag', asset.etag).header('cache-control', 'private, max-age=3600').header('x-content-type-options', 'nosniff');
    if (request.headers['if-none-match'] === asset.etag) return reply.code(304).send();
    return reply.type(asset.type).send(asset.body);
  });
}

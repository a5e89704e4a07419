import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { safeNextPath, type StaffAuth } from '../auth';
import { sendError } from '../errors';
import { ThrottledError } from '../login-throttle';
import { html, page, sendPage } from '../ui/html';

const loginBody = z.object({
  username: z.string().max(200).default(''),
  password: z.string().max(1000).default(''),
  next: z.string().optional(),
});

function loginForm(next: string, error?: string, username = '') {
  return page(
    'Sign in · Platform dashboard',
    html`<form class="card" method="post" action="/login">
  <h1>Staff sign-in</h1>
  <input type="hidden" name="next" value="${next}">
  <label for="username">Username</label>
  <input id="username" name="username" autocomplete="username" required autofocus value="${username}">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
  <button type="submit">Sign in</button>
</form>`,
  );
}

/** A form post from a page (answered with pages and redirects) rather than a script (JSON, statuses). */
function fromBrowser(request: FastifyRequest): boolean {
  return (
    (request.headers.accept ?? '').includes('text/html') ||
    (request.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')
  );
}

export async function loginRoutes(app: FastifyInstance, opts: { auth: StaffAuth }): Promise<void> {
  const { auth } = opts;

  app.get('/login', { config: { public: true } }, async (request, reply) => {
    const next = safeNextPath((request.query as Record<string, unknown>).next);
    if (await auth.fromSession(request)) return reply.redirect(next, 302);
    return sendPage(reply, loginForm(next));
  });

  app.post('/login', { config: { public: true } }, async (request, reply) => {
    const parsed = loginBody.safeParse(request.body ?? {});
    if (!parsed.success) return sendError(reply, 'validation_failed', 'username and password are required');
    const { username, password } = parsed.data;
    const next = safeNextPath(parsed.data.next);
    let acc;
    try {
      acc = username && password ? await auth.attempt(username, password, request.ip) : undefined;
    } catch (err) {
      if (!(err instanceof ThrottledError)) throw err;
      request.log.warn({ username, ip: request.ip }, 'staff sign-in throttled');
      if (fromBrowser(request)) {
        reply.header('retry-after', String(err.retryAfterS));
        const minutes = Math.ceil(err.retryAfterS / 60);
        return sendPage(reply, loginForm(next, `Too many failed attempts. Try again in ${minutes} minute${minutes === 1 ? '' : 's'}.`, username), 429);
      }
      return sendError(reply, 'rate_limited', err.message, err.retryAfterS);
    }
    if (!acc) {
      request.log.info({ username }, 'staff sign-in refused');
      if (fromBrowser(request)) {
        return sendPage(reply, loginForm(next, 'Wrong username or password.', username), 401);
      }
      return sendError(reply, 'unauthorized', 'wrong username or password');
    }
    request.log.info({ staff: acc.username, role: acc.role }, 'staff signed in');
    auth.startSession(reply, acc);
    // 303: the browser follows a POST with a GET.
    return reply.redirect(next, 303);
  });

  // Public: signing out only clears a cookie, and it must work for an expired session too.
  app.post('/logout', { config: { public: true } }, async (request, reply) => {
    auth.endSession(reply);
    return fromBrowser(request)
      ? reply.redirect('/login', 303)
      : reply.code(204).send();
  });
}

import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fastifyCookie from '@fastify/cookie';
import { getStaffUser, isConnectionError, type Db, type StaffRole } from '@platform/db';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendError } from './errors';
import { ThrottledError, type LoginThrottle } from './login-throttle';
import { burnPasswordCheck, verifyPassword } from './passwords';

/**
 * Staff authentication. Every route needs a staff identity unless its config says `public`;
 * the identity comes from a signed session cookie (browsers, after POST /login) or from HTTP
 * Basic credentials (scripts). Viewers may read; only operators may send a mutating request.
 *
 * CSRF: a session carries a random token (inside the signed, HTTP-only cookie). Every mutating
 * request made with the session must send it back: as the `_csrf` field of our forms, or as an
 * `X-CSRF-Token` / `X-XSRF-Token` header. The token is also set as a readable `XSRF-TOKEN`
 * cookie, which bull-board's UI (axios) echoes in `X-XSRF-TOKEN` on its own same-origin calls.
 * HTTP Basic requests carry no session to ride on; a browser replaying cached Basic credentials
 * cross-site is stopped by the Origin / Sec-Fetch-Site check below.
 */

export interface StaffIdentity {
  username: string;
  role: StaffRole;
  via: 'session' | 'basic';
  /** The session's CSRF token, to embed in forms (sessions only). */
  csrf?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    staff: StaffIdentity | null;
  }
  interface FastifyContextConfig {
    /** Answers without credentials (sign-in, health). */
    public?: boolean;
  }
}

export interface AuthOptions {
  db: Db;
  /** The account of DASHBOARD_USER / DASHBOARD_PASSWORD, an operator. */
  operator?: { username: string; password: string };
  /** Signs session cookies and keys credential fingerprints. */
  secret: string;
  /** `auto`: Secure when the request came over https. */
  cookieSecure: boolean | 'auto';
  sessionTtlMs?: number;
  /** Failed sign-ins (form and HTTP Basic) per username and per address. */
  throttle?: LoginThrottle;
}

export const SESSION_COOKIE = 'dashboard_session';
/** axios's default cookie name, so bull-board's UI sends the token without being told to. */
export const XSRF_COOKIE = 'XSRF-TOKEN';
export const CSRF_FIELD = '_csrf';
const DEFAULT_SESSION_TTL_MS = 12 * 3600 * 1000;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const BASIC_CACHE_TTL_MS = 5 * 60 * 1000;
const BASIC_CACHE_MAX = 256;

interface Account {
  username: string;
  role: StaffRole;
  /** Changes whenever the account's password (or, for a database account, the row) changes. */
  fingerprint: string;
}

/** What the session cookie carries, before signing: no password material, no role. */
interface SessionPayload {
  v: 2;
  u: string;
  f: string;
  exp: number;
  /** The session's CSRF token. */
  c: string;
}

export class StaffAuth {
  private readonly ttlMs: number;
  /** HTTP Basic results, so a polling script does not pay for scrypt on every request. */
  private readonly basicCache = new Map<string, { fingerprint: string; expires: number }>();

  constructor(private readonly opts: AuthOptions) {
    this.ttlMs = opts.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS;
  }

  private hmac(...parts: string[]): string {
    return createHmac('sha256', this.opts.secret).update(parts.join('\0')).digest('base64url');
  }

  /** The current state of an account, or undefined when it does not exist (any more). */
  private async account(username: string): Promise<(Account & { passwordHash?: string }) | undefined> {
    const op = this.opts.operator;
    if (op && username === op.username) {
      return { username, role: 'operator', fingerprint: this.hmac('env', op.username, op.password).slice(0, 22) };
    }
    const row = await getStaffUser(this.opts.db, username);
    if (!row) return undefined;
    return {
      username: row.username,
      role: row.role,
      fingerprint: this.hmac('db', row.id, row.passwordHash).slice(0, 22),
      passwordHash: row.passwordHash,
    };
  }

  /**
   * Checks a sign-in attempt under the throttle: throws ThrottledError (without looking at the
   * password) while the username or the address is over its limit, and counts a failure.
   */
  async attempt(username: string, password: string, ip: string): Promise<Account | undefined> {
    const throttle = this.opts.throttle;
    await throttle?.check(username, ip);
    const acc = await this.verify(username, password);
    if (acc) await throttle?.succeeded(username, ip);
    else await throttle?.failed(username, ip);
    return acc;
  }

  /** Checks a username and password; the env operator shadows a database account of the same name. */
  async verify(username: string, password: string): Promise<Account | undefined> {
    const op = this.opts.operator;
    if (op && username === op.username) {
      // Digests first: timingSafeEqual needs equal lengths, and the length must not leak either.
      const given = createHash('sha256').update(password).digest();
      const expected = createHash('sha256').update(op.password).digest();
      return timingSafeEqual(given, expected) ? this.account(username) : undefined;
    }
    const acc = await this.account(username);
    if (!acc?.passwordHash) {
      await burnPasswordCheck(password);
      return undefined;
    }
    return (await verifyPassword(password, acc.passwordHash)) ? acc : undefined;
  }

  private async verifyBasic(username: string, password: string, ip: string): Promise<Account | undefined> {
    const key = this.hmac('basic', username, password);
    const cached = this.basicCache.get(key);
    if (cached && cached.expires > Date.now()) {
      // The account is read again each time, so a removed account or a changed password or role
      // takes effect at once; only the scrypt comparison is skipped.
      const acc = await this.account(username);
      if (acc && acc.fingerprint === cached.fingerprint) return acc;
      this.basicCache.delete(key);
    }
    const acc = await this.attempt(username, password, ip);
    if (acc) {
      if (this.basicCache.size >= BASIC_CACHE_MAX) this.basicCache.clear();
      this.basicCache.set(key, { fingerprint: acc.fingerprint, expires: Date.now() + BASIC_CACHE_TTL_MS });
    }
    return acc;
  }

  /** Sets the session cookie for an account that just signed in. */
  startSession(reply: FastifyReply, acc: Account): void {
    const csrf = randomBytes(18).toString('base64url');
    const payload: SessionPayload = { v: 2, u: acc.username, f: acc.fingerprint, exp: Date.now() + this.ttlMs, c: csrf };
    reply.setCookie(SESSION_COOKIE, Buffer.from(JSON.stringify(payload)).toString('base64url'), {
      signed: true,
      httpOnly: true,
      sameSite: 'lax',
      secure: this.opts.cookieSecure,
      path: '/',
      maxAge: Math.floor(this.ttlMs / 1000),
    });
    this.setXsrfCookie(reply, csrf);
  }

  /** Readable by our pages' scripts on purpose (double submit); useless to another site, which cannot read it. */
  setXsrfCookie(reply: FastifyReply, csrf: string): void {
    reply.setCookie(XSRF_COOKIE, csrf, {
      httpOnly: false,
      sameSite: 'strict',
      secure: this.opts.cookieSecure,
      path: '/',
      maxAge: Math.floor(this.ttlMs / 1000),
    });
  }

  endSession(reply: FastifyReply): void {
    reply.clearCookie(SESSION_COOKIE, { path: '/', httpOnly: true, sameSite: 'lax', secure: this.opts.cookieSecure });
    reply.clearCookie(XSRF_COOKIE, { path: '/', sameSite: 'strict', secure: this.opts.cookieSecure });
  }

  /** The identity of a valid, unexpired session whose account still exists unchanged. */
  async fromSession(request: FastifyRequest): Promise<StaffIdentity | undefined> {
    const raw = request.cookies[SESSION_COOKIE];
    if (!raw) return undefined;
    const unsigned = request.unsignCookie(raw);
    if (!unsigned.valid) return undefined;
    let payload: SessionPayload;
    try {
      payload = JSON.parse(Buffer.from(unsigned.value, 'base64url').toString('utf8')) as SessionPayload;
    } catch {
      return undefined;
    }
    if (payload?.v !== 2 || typeof payload.u !== 'string' || typeof payload.exp !== 'number' || typeof payload.c !== 'string') {
      return undefined;
    }
    if (payload.exp <= Date.now()) return undefined;
    const acc = await this.account(payload.u);
    if (!acc || acc.fingerprint !== payload.f) return undefined;
    return { username: acc.username, role: acc.role, via: 'session', csrf: payload.c };
  }

  /** `undefined`: no Basic header; `null`: a Basic header whose credentials are wrong. */
  async fromBasic(request: FastifyRequest): Promise<StaffIdentity | null | undefined> {
    const header = request.headers.authorization;
    if (!header) return undefined;
    const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
    if (!m) return null;
    const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) return null;
    const acc = await this.verifyBasic(decoded.slice(0, colon), decoded.slice(colon + 1), request.ip);
    return acc ? { username: acc.username, role: acc.role, via: 'basic' } : null;
  }
}

/** A browser navigating to a page: worth a redirect to the sign-in form rather than a bare 401. */
export function wantsPage(request: FastifyRequest): boolean {
  const accept = request.headers.accept ?? '';
  return (request.method === 'GET' || request.method === 'HEAD') && accept.includes('text/html');
}

/** Only same-origin paths, so `?next=` cannot send a signed-in user to another site. */
export function safeNextPath(next: unknown): string {
  if (typeof next !== 'string' || next.length > 2000) return '/';
  if (!next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return '/';
  if (/[\u0000-\u001f\u007f]/.test(next)) return '/';
  return next;
}

/**
 * A mutating request that a browser marks as coming from another site is refused, before any
 * credential is looked at. SameSite=Lax already keeps the session cookie off cross-site POSTs
 * (and the CSRF token covers sessions anyway), but a browser also replays cached HTTP Basic
 * credentials, which neither covers.
 */
function isCrossSite(request: FastifyRequest): boolean {
  const site = request.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return true;
  const origin = request.headers.origin;
  if (!origin) return false;
  try {
    return new URL(origin).host !== request.host;
  } catch {
    return true;
  }
}

export async function installAuth(app: FastifyInstance, opts: AuthOptions): Promise<StaffAuth> {
  const auth = new StaffAuth(opts);
  await app.register(fastifyCookie, { secret: opts.secret, algorithm: 'sha256' });
  app.decorateRequest('staff', null);

  app.addHook('onRequest', async (request, reply) => {
    const mutating = !SAFE_METHODS.has(request.method);
    if (mutating && isCrossSite(request)) {
      return sendError(reply, 'forbidden', 'cross-site requests may not change anything here');
    }
    if (request.routeOptions.config?.public) return;

    let basic: StaffIdentity | null | undefined;
    let identity: StaffIdentity | null | undefined;
    try {
      basic = await auth.fromBasic(request);
      identity = basic === undefined ? await auth.fromSession(request) : basic;
    } catch (err) {
      // Answered here, not thrown: bull-board's routes have an error handler (and shape) of their own.
      if (err instanceof ThrottledError) {
        return sendError(reply, 'rate_limited', err.message, err.retryAfterS);
      }
      if (isConnectionError(err)) {
        request.log.warn({ err }, 'cannot check credentials: PostgreSQL unavailable');
        return sendError(reply, 'dependency_unavailable', 'PostgreSQL does not answer, so credentials cannot be checked; try again shortly');
      }
      request.log.error({ err }, 'credential check failed');
      return sendError(reply, 'internal', 'internal error');
    }
    if (!identity) {
      if (basic === undefined && wantsPage(request)) {
        if (request.cookies[SESSION_COOKIE]) auth.endSession(reply);
        return reply.redirect(`/login?next=${encodeURIComponent(request.url)}`, 302);
      }
      reply.header('www-authenticate', 'Basic realm="dashboard", charset="UTF-8"');
      return sendError(reply, 'unauthorized', basic === null ? 'wrong username or password' : 'sign in first: a session cookie or HTTP Basic credentials are required');
    }
    request.staff = identity;
    if (mutating) {
      if (identity.role !== 'operator') {
        return sendError(reply, 'forbidden', 'viewers may look but not act; ask an operator');
      }
      // The dashboard's own actions are audited in the audit_log table; bull-board's in the log.
      request.log.info({ staff: identity.username, method: request.method, url: request.url }, 'staff action');
    } else if (identity.csrf && request.cookies[XSRF_COOKIE] !== identity.csrf) {
      auth.setXsrfCookie(reply, identity.csrf);
    }
  });

  // After the body is parsed (the token may be a form field), before any handler acts.
  app.addHook('preHandler', async (request, reply) => {
    if (SAFE_METHODS.has(request.method) || request.staff?.via !== 'session') return;
    if (!csrfMatches(request, request.staff.csrf)) {
      return sendError(reply, 'forbidden', 'the CSRF token is missing or wrong: reload the page and try again');
    }
  });
  return auth;
}

function csrfMatches(request: FastifyRequest, expected: string | undefined): boolean {
  if (!expected) return false;
  const body = request.body;
  const fromBody = body && typeof body === 'object' ? (body as Record<string, unknown>)[CSRF_FIELD] : undefined;
  const given = [fromBody, request.headers['x-csrf-token'], request.headers['x-xsrf-token']].find((v) => typeof v === 'string');
  if (typeof given !== 'string') return false;
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

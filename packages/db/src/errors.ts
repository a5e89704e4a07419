/**
 * Database error classification by SQLSTATE, in one place (STYLE habit 2).
 * Drizzle wraps driver errors; the pg error with its `code` sits on `cause`.
 */
const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (lock_timeout)
  '57014', // query_canceled (statement_timeout)
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
]);

const CONNECTION_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH']);

function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  let cur: unknown = err;
  for (let i = 0; cur && i < 8; i++) {
    out.push(cur);
    cur = (cur as { cause?: unknown }).cause;
  }
  return out;
}

export function sqlState(err: unknown): string | undefined {
  for (const e of chain(err)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** True when the database could not be reached or dropped the connection. */
export function isConnectionError(err: unknown): boolean {
  for (const e of chain(err)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (CONNECTION_ERRNOS.has(code) || code.startsWith('08'))) return true;
    const msg = e instanceof Error ? e.message : '';
    if (/Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout/i.test(msg)) {
      return true;
    }
  }
  const state = sqlState(err);
  return state === '57P01' || state === '57P03' || state === '53300';
}

/** Worth retrying with backoff: the same work may succeed once the fault passes. */
export function isTransientDbError(err: unknown): boolean {
  const state = sqlState(err);
  return (state !== undefined && TRANSIENT_SQLSTATES.has(state)) || isConnectionError(err);
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  for (const e of chain(err)) {
    if ((e as { code?: unknown }).code === '23505') {
      return !constraint || (e as { constraint?: unknown }).constraint === constraint;
    }
  }
  return false;
}

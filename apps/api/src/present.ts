import type { CmsRow, JobRow } from '@platform/db';

/** A job as the contract shows it (shared/API.md "A job"); internals such as stacks stay out. */
export function presentJob(row: JobRow) {
  const error = row.error && row.status !== 'completed'
    ? {
        code: row.error.code,
        message: row.error.message,
        details: row.error.details ?? [],
        ...(row.error.invalidCount !== undefined ? { invalidCount: row.error.invalidCount } : {}),
      }
    : null;
  return {
    id: row.id,
    type: row.type,
    status: row.status,
    progress: { done: row.progressDone, total: row.progressTotal },
    attempts: row.attempts,
    createdAt: row.createdAt.toISOString(),
    startedAt: row.startedAt?.toISOString() ?? null,
    finishedAt: row.finishedAt?.toISOString() ?? null,
    cancelRequested: row.cancelRequestedAt !== null,
    result: row.result ?? null,
    error: row.status === 'failed' || row.status === 'cancelled' ? error : null,
  };
}

export function presentRow(row: CmsRow) {
  return {
    id: row.id,
    identifier: row.identifier,
    data: row.data ?? null,
    draftData: row.draftData,
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** Opaque cursors: base64url JSON, so their inside can change without breaking clients. */
export function encodeCursor(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

export function decodeCursor<T>(cursor: string, check: (v: unknown) => v is T): T | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    return check(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

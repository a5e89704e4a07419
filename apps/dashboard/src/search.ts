import {
  findTeamIds,
  getStaffJobListRow,
  JOB_STATUSES,
  searchJobsAllTeams,
  UUID_RE,
  type Db,
  type JobStatus,
  type StaffJobListRow,
} from '@platform/db';
import { JOB_NAMES } from '@platform/jobs';

/**
 * The job history search shared by the page (/jobs) and its JSON twin (/api/jobs): by job id, team
 * (id or exact name), job type, status and creation time range; newest first; keyset cursor.
 */

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 200;

export interface SearchQuery {
  id?: string;
  team?: string;
  type?: string;
  status?: string;
  from?: string;
  to?: string;
  cursor?: string;
  limit?: string;
}

export interface SearchOutcome {
  /** The query as understood, for the form and the pager. */
  query: Required<Pick<SearchQuery, 'id' | 'team' | 'type' | 'status' | 'from' | 'to'>>;
  limit: number;
  jobs: StaffJobListRow[];
  nextCursor: string | null;
  /** Resolved team ids when a team was given (empty: no such team). */
  teamIds?: string[];
  problems: string[];
}

const str = (v: unknown): string => (typeof v === 'string' ? v.trim() : '');

/** `2024-05-01T10:00` (a datetime-local field, read as UTC), or any ISO time. */
export function parseTime(v: string): Date | undefined {
  if (!v) return undefined;
  const iso = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$/.test(v) ? `${v}Z` : /^\d{4}-\d{2}-\d{2}$/.test(v) ? `${v}T00:00:00Z` : v;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? undefined : new Date(t);
}

const ISO_EXACT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

export function encodeCursor(row: StaffJobListRow): string {
  return Buffer.from(JSON.stringify({ t: row.createdAtExact, id: row.id })).toString('base64url');
}

export function decodeCursor(cursor: string): { t: string; id: string } | undefined {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { t?: unknown; id?: unknown };
    if (typeof v.t === 'string' && ISO_EXACT.test(v.t) && !Number.isNaN(Date.parse(v.t)) && typeof v.id === 'string' && UUID_RE.test(v.id)) {
      return { t: v.t, id: v.id };
    }
  } catch {
    // not ours
  }
  return undefined;
}

/** A history id, or a BullMQ job id (`<history id>.<dispatch>`) as bull-board shows it. */
export function jobIdFrom(v: string): string | undefined {
  const m = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(\.\d+)?$/i.exec(v);
  return m ? m[1]!.toLowerCase() : undefined;
}

export async function runSearch(db: Db, raw: Record<string, unknown>): Promise<SearchOutcome> {
  const query = {
    id: str(raw.id),
    team: str(raw.team),
    type: str(raw.type),
    status: str(raw.status),
    from: str(raw.from),
    to: str(raw.to),
  };
  const problems: string[] = [];
  const limitRaw = str(raw.limit);
  let limit = limitRaw ? Number(limitRaw) : DEFAULT_PAGE;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    problems.push(`limit must be a whole number from 1 to ${MAX_PAGE}`);
    limit = DEFAULT_PAGE;
  }
  const empty = (): SearchOutcome => ({ query, limit, jobs: [], nextCursor: null, problems });

  if (query.id) {
    const id = jobIdFrom(query.id);
    if (!id) {
      problems.push('a job id is a UUID (or a BullMQ id: the UUID, a dot and a number)');
      return empty();
    }
    const row = await getStaffJobListRow(db, id);
    return { ...empty(), jobs: row ? [row] : [] };
  }
  if (query.type && !(JOB_NAMES as string[]).includes(query.type)) problems.push(`unknown job type "${query.type}"`);
  if (query.status && !(JOB_STATUSES as readonly string[]).includes(query.status)) problems.push(`unknown status "${query.status}"`);
  const from = parseTime(query.from);
  const to = parseTime(query.to);
  if (query.from && !from) problems.push('"from" is not a time');
  if (query.to && !to) problems.push('"to" is not a time');
  const cursorRaw = str(raw.cursor);
  const after = cursorRaw ? decodeCursor(cursorRaw) : undefined;
  if (cursorRaw && !after) problems.push('the cursor is not one this dashboard gave out');
  if (problems.length) return empty();

  let teamIds: string[] | undefined;
  if (query.team) {
    teamIds = await findTeamIds(db, query.team, UUID_RE.test(query.team));
    if (teamIds.length === 0) return { ...empty(), teamIds };
  }
  const rows = await searchJobsAllTeams(db, {
    teamIds,
    type: query.type || undefined,
    status: (query.status || undefined) as JobStatus | undefined,
    from,
    to,
    after,
    limit: limit + 1,
  });
  const jobs = rows.slice(0, limit);
  const last = jobs[jobs.length - 1];
  return { query, limit, jobs, nextCursor: rows.length > limit && last ? encodeCursor(last) : null, teamIds, problems };
}

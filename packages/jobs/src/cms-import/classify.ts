import type pg from 'pg';
import type { ImportRow, RowProblem } from './rows';
import { existsMessage, findClaims, findExisting, repeatMessage } from './writes';

export interface ClassifyOptions {
  pool: Pick<pg.Pool, 'query'>;
  jobId: string;
  tableId: string;
  mode: 'insert' | 'upsert';
  /**
   * `mode=insert`: `file-and-table` (the write pass under `onError=skip`): an identifier that a
   * live row has, or that an earlier valid row of the file claimed, makes a row invalid. `none`:
   * the validate pass, where every valid row claims its identifier and the pass finds the rows
   * that cannot be inserted with one query at its end (`findIdentifierProblems`), so no chunk reads
   * what another wrote and chunks can be planned while the one before commits; and the write pass
   * after it, which only writes.
   */
  identifiers: 'file-and-table' | 'none';
}

export interface Classified {
  /** Rows to write, in file order. */
  valid: ImportRow[];
  /** Rows that will not be written, and their problems (in file order). */
  invalidRows: number;
  problems: RowProblem[];
  /** `mode=insert`: the identifiers the valid rows claim. */
  claims: { identifier: string; line: number }[];
  /** `mode=upsert`: of the valid rows' identifiers, those that name a live row before this chunk. */
  existing: Set<string>;
}

/**
 * Splits a chunk's rows into valid and invalid ones. Under `mode=insert` an identifier that a live
 * row has, or that an earlier valid row of the file claimed, is invalid; only valid rows claim, so a
 * row skipped for its data does not block a later row with the same identifier. Reads only (between
 * chunks): the table is written by one job at a time, so what is read still holds at the write.
 */
export async function classify(rows: ImportRow[], o: ClassifyOptions): Promise<Classified> {
  const identifiers = () => [...new Set(rows.flatMap((r) => (r.identifier !== undefined ? [r.identifier] : [])))];
  const out: Classified = { valid: [], invalidRows: 0, problems: [], claims: [], existing: new Set() };
  if (o.mode === 'upsert') {
    out.existing = await findExisting(o.pool, o.tableId, identifiers());
    for (const r of rows) {
      if (r.problems.length === 0) out.valid.push(r);
      else reject(out, r);
    }
    return out;
  }
  let claimed = new Map<string, number>();
  let existing = new Set<string>();
  if (o.identifiers === 'file-and-table') {
    const idents = identifiers();
    [claimed, existing] = await Promise.all([findClaims(o.pool, o.jobId, idents), findExisting(o.pool, o.tableId, idents)]);
  }
  const here = new Map<string, number>();
  for (const r of rows) {
    const id = r.identifier;
    if (id !== undefined && o.identifiers !== 'none') {
      const first = claimed.get(id) ?? here.get(id);
      if (first !== undefined) {
        r.problems.push({ line: r.line, field: 'identifier', message: repeatMessage(id, first) });
      } else if (existing.has(id)) {
        r.problems.push({ line: r.line, field: 'identifier', message: existsMessage(id) });
      }
    }
    if (r.problems.length > 0) {
      reject(out, r);
      continue;
    }
    out.valid.push(r);
    if (id !== undefined) {
      here.set(id, r.line);
      out.claims.push({ identifier: id, line: r.line });
    }
  }
  return out;
}

function reject(out: Classified, r: ImportRow): void {
  out.invalidRows++;
  out.problems.push(...r.problems);
}

/**
 * `mode=upsert` within one chunk: the last row of an identifier wins. Returns the rows to write
 * (distinct identifiers) and how the chunk's rows count: a row adds a table row when its identifier
 * is new, and replaces a draft otherwise (an earlier row of the same file included).
 */
export function collapseUpserts(valid: ImportRow[], existing: Set<string>) {
  const last = new Map<string, ImportRow>();
  const unkeyed: ImportRow[] = [];
  let inserted = 0;
  let updated = 0;
  for (const r of valid) {
    if (r.identifier === undefined) {
      unkeyed.push(r);
      inserted++;
    } else {
      if (last.has(r.identifier) || existing.has(r.identifier)) updated++;
      else inserted++;
      last.set(r.identifier, r);
    }
  }
  const writes = [...unkeyed, ...last.values()];
  // What the statement itself will report: one insert per new identifier, one update per existing one.
  const newKeys = [...last.keys()].filter((k) => !existing.has(k)).length;
  return { writes, inserted, updated, expect: { inserted: unkeyed.length + newKeys, updated: last.size - newKeys } };
}

import { sql } from 'drizzle-orm';
import type { Db, CmsTableRow } from '@platform/db';
import type { BulkOperation } from './definition';

export interface OperationProblem {
  index: number;
  field?: string;
  message: string;
}

const LOOKUP_BATCH = 2_000;

/**
 * Checks operations in order against the table as the earlier operations of the same request
 * leave it, without writing: an insert of an identifier that exists, or an update or delete of a
 * row that does not, is a problem. Existing rows are looked up in batches; memory holds only the
 * rows the request names.
 */
export async function simulateOperations(
  db: Db,
  table: CmsTableRow,
  ops: AsyncIterable<BulkOperation>,
  onProblem: (p: OperationProblem) => void,
  perOp: (op: BulkOperation, index: number) => void,
): Promise<void> {
  // identifier -> alive?; id -> identifier when alive, null when deleted by the request.
  const byIdentifier = new Map<string, boolean>();
  const byId = new Map<string, string | null>();
  const idOfIdentifier = new Map<string, string>();
  let index = 0;
  let batch: BulkOperation[] = [];

  const flush = async () => {
    const idents = new Set<string>();
    const ids = new Set<string>();
    for (const op of batch) {
      if (op.op !== 'insert' && op.id !== undefined) {
        if (!byId.has(op.id)) ids.add(op.id);
      } else if (op.identifier !== undefined && !byIdentifier.has(op.identifier)) {
        idents.add(op.identifier);
      }
    }
    if (idents.size || ids.size) {
      const found = await db.execute<{ id: string; identifier: string }>(sql`
        select id, identifier from cms_rows
        where table_id = ${table.id} and deleted_at is null
          and (identifier = any(${sql.param([...idents])}::text[]) or id = any(${sql.param([...ids])}::uuid[]))`);
      for (const r of found.rows) {
        if (!byIdentifier.has(r.identifier)) byIdentifier.set(r.identifier, true);
        if (!byId.has(r.id)) byId.set(r.id, r.identifier);
        idOfIdentifier.set(r.identifier, r.id);
      }
      for (const i of idents) if (!byIdentifier.has(i)) byIdentifier.set(i, false);
      for (const i of ids) if (!byId.has(i)) byId.set(i, null);
    }
    for (const op of batch) {
      const i = index++;
      perOp(op, i);
      if (op.op === 'insert') {
        if (op.identifier === undefined) continue;
        if (byIdentifier.get(op.identifier)) {
          onProblem({ index: i, message: `a row with identifier ${JSON.stringify(op.identifier)} already exists` });
        } else {
          byIdentifier.set(op.identifier, true);
          idOfIdentifier.delete(op.identifier);
        }
        continue;
      }
      if (op.id !== undefined) {
        const ident = byId.get(op.id);
        if (ident === null || ident === undefined || byIdentifier.get(ident) === false) {
          onProblem({ index: i, message: `no row with id ${op.id}` });
        } else if (op.op === 'delete') {
          byId.set(op.id, null);
          byIdentifier.set(ident, false);
        }
        continue;
      }
      const ident = op.identifier!;
      if (!byIdentifier.get(ident)) {
        onProblem({ index: i, message: `no row with identifier ${JSON.stringify(ident)}` });
      } else if (op.op === 'delete') {
        byIdentifier.set(ident, false);
        const id = idOfIdentifier.get(ident);
        if (id) byId.set(id, null);
      }
    }
    batch = [];
  };

  for await (const op of ops) {
    batch.push(op);
    if (batch.length >= LOOKUP_BATCH) await flush();
  }
  await flush();
}

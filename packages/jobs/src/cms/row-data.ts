import type { CmsField } from '@platform/db';

export interface FieldProblem {
  field: string;
  message: string;
}

const ISO_DATETIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

function checkValue(field: CmsField, value: unknown): string | undefined {
  switch (field.type) {
    case 'text':
      return typeof value === 'string' ? undefined : 'must be a string';
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : 'must be a finite number';
    case 'boolean':
      return typeof value === 'boolean' ? undefined : 'must be true or false';
    case 'datetime':
      return typeof value === 'string' && ISO_DATETIME.test(value) && !Number.isNaN(Date.parse(value))
        ? undefined
        : 'must be an ISO-8601 date-time string';
    case 'json':
      return jsonDeeperThan(value, MAX_JSON_DEPTH) ? `is nested deeper than ${MAX_JSON_DEPTH} levels` : undefined;
  }
}

/**
 * JSON values may nest this deep. Deeper ones are refused as invalid rows: an import row nested
 * 100,000 levels failed every chunk write (JSON.stringify overflows the stack past ~5,000 levels,
 * PostgreSQL's jsonb input past ~50,000) as an `internal` error, retried five times (fault suite,
 * test/faults/hostile-input.test.ts).
 */
export const MAX_JSON_DEPTH = 256;

/** Whether `value` nests objects or arrays more than `max` levels deep (iterative: no recursion). */
export function jsonDeeperThan(value: unknown, max: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (depth > max) return true;
    for (const child of Object.values(v as object)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}

const byNameCache = new WeakMap<readonly CmsField[], Map<string, CmsField>>();

/** The fields by name, built once per fields array (an import checks a million rows against one). */
function fieldsByName(fields: readonly CmsField[]): Map<string, CmsField> {
  let m = byNameCache.get(fields);
  if (!m) {
    m = new Map(fields.map((f) => [f.name, f]));
    byNameCache.set(fields, m);
  }
  return m;
}

/**
 * Checks a row's data against the table's fields: known fields only, right types, required ones
 * present. Returns every problem (empty when the row fits).
 */
export function validateRowData(fields: readonly CmsField[], data: unknown): FieldProblem[] {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return [{ field: '', message: 'row data must be an object keyed by field name' }];
  }
  const problems: FieldProblem[] = [];
  const record = data as Record<string, unknown>;
  const byName = fieldsByName(fields);
  for (const key of Object.keys(record)) {
    if (!byName.has(key)) problems.push({ field: key, message: 'is not a field of this table' });
  }
  for (const f of fields) {
    const v = record[f.name];
    if (v === undefined || v === null) {
      if (f.required) problems.push({ field: f.name, message: 'is required' });
      continue;
    }
    const msg = checkValue(f, v);
    if (msg) problems.push({ field: f.name, message: msg });
  }
  return problems;
}

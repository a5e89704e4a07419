import type { CmsField } from '@platform/db';
import { validateRowData } from '../cms/row-data';
import { identifierSchema, MAX_IDENTIFIER_LENGTH } from '../cms-bulk-write/definition';

/** One problem of one row, as the contract names it: `[{line, field, message}]`. */
export interface RowProblem {
  line: number;
  field: string;
  message: string;
}

/** A record of the file turned into a row of the table, with everything wrong with it. */
export interface ImportRow {
  line: number;
  identifier?: string;
  data: Record<string, unknown>;
  /** `data` as JSON text, when it was cut from the line as it stands (`trustedNdjsonRow`); `data` is then empty. */
  dataText?: string;
  problems: RowProblem[];
}

/** Columns with a meaning of their own: `identifier` keys the row, `id` is ignored. */
const IDENTIFIER = 'identifier';
const ID = 'id';

const problem = (line: number, field: string, message: string): RowProblem => ({
  line,
  field,
  message: field ? `${field} ${message}` : message,
});

const CONTROL = /[\u0000-\u001f]/;

function checkIdentifier(line: number, value: unknown, out: RowProblem[]): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    out.push(problem(line, IDENTIFIER, 'must be a string'));
    return undefined;
  }
  // What identifierSchema accepts, checked without it for the million rows of an import that pass.
  if (value.length >= 1 && value.length <= MAX_IDENTIFIER_LENGTH && !CONTROL.test(value)) return value;
  const parsed = identifierSchema.safeParse(value);
  if (!parsed.success) {
    const message =
      value.length === 0
        ? 'must not be empty'
        : value.length > MAX_IDENTIFIER_LENGTH
          ? `must be at most ${MAX_IDENTIFIER_LENGTH} characters`
          : parsed.error.issues.map((i) => i.message).join('; ');
    out.push(problem(line, IDENTIFIER, message));
    return undefined;
  }
  return parsed.data;
}

function finish(fields: readonly CmsField[], line: number, identifier: unknown, data: Record<string, unknown>, problems: RowProblem[]): ImportRow {
  const ident = checkIdentifier(line, identifier, problems);
  const found = validateRowData(fields, data);
  if (found.length > 0) {
    // A cell that could not be read is named once, not again as "is required".
    const named = new Set(problems.map((p) => p.field));
    for (const p of found) if (!named.has(p.field)) problems.push(problem(line, p.field, p.message));
  }
  return { line, identifier: ident, data, problems };
}

/** An NDJSON line: one JSON object keyed by field name. */
export function ndjsonRow(fields: readonly CmsField[], line: number, text: string): ImportRow {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { line, data: {}, problems: [problem(line, '', 'is not valid JSON')] };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { line, data: {}, problems: [problem(line, '', 'must be a JSON object keyed by field name')] };
  }
  const { [IDENTIFIER]: identifier, [ID]: _ignored, ...data } = value as Record<string, unknown>;
  // A null is "no value", as an empty CSV cell is: an NDJSON export writes null for a missing
  // field, and re-importing it must reproduce the row, not add null keys.
  for (const k of Object.keys(data)) if (data[k] === null) delete data[k];
  return finish(fields, line, identifier, data, []);
}

const PLAIN_START = '{"identifier":"';

/**
 * An NDJSON line of a file that a validate pass has accepted whole (the write pass of an insert
 * under `onError=abort`): when the line is plain, its data is the rest of the line as it stands,
 * cut without parsing it again: PostgreSQL parses it once, into the jsonb that `ndjsonRow`'s data
 * would give. Parsing and encoding every row a second time was a third of the worker's CPU in a
 * 1M-row import. Plain: it starts `{"identifier":"…",`, holds no backslash at all (so no key is
 * escaped, and `"id"` or a second `"identifier"` key would show as such), no `null`, no `"id"`
 * or second `"identifier"` anywhere, and every number reads back as written in JavaScript
 * (`1.50`, `1e-20000` or 20 digits are stored as JavaScript reads them). Any other line is read
 * as `ndjsonRow` reads it.
 */
export function trustedNdjsonRow(fields: readonly CmsField[], line: number, text: string): ImportRow {
  if (text.startsWith(PLAIN_START) && !text.includes('\\')) {
    const end = text.indexOf('"', PLAIN_START.length);
    if (end > PLAIN_START.length && text[end + 1] === ',') {
      const rest = text.slice(end + 2);
      if (!rest.includes('null') && !rest.includes('"id"') && !rest.includes('"identifier"') && numbersAsWritten(rest)) {
        return { line, identifier: text.slice(PLAIN_START.length, end), data: {}, dataText: `{${rest}`, problems: [] };
      }
    }
  }
  return ndjsonRow(fields, line, text);
}

const NUMBER = /-?\d[\d.eE+-]*/g;

/** Whether every number outside the strings of `json` (which holds no backslash) is written as JavaScript writes it. */
function numbersAsWritten(json: string): boolean {
  for (let at = 0; at < json.length; ) {
    const open = json.indexOf('"', at);
    const between = open === -1 ? json.slice(at) : json.slice(at, open);
    for (const m of between.matchAll(NUMBER)) if (String(Number(m[0])) !== m[0]) return false;
    if (open === -1) return true;
    const close = json.indexOf('"', open + 1);
    if (close === -1) return false;
    at = close + 1;
  }
  return true;
}

/** Characters that make a spreadsheet read a cell as a formula; exports prefix them with `'`. */
const FORMULA_START = new Set(['=', '+', '-', '@', '\t', '\r']);

/** Removes the `'` an export put before a formula-like first character (shared/API.md, CSV). */
export function unprefixText(cell: string): string {
  return cell.length > 1 && cell[0] === "'" && FORMULA_START.has(cell[1]!) ? cell.slice(1) : cell;
}

const NUMBER_RE = /^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$/;

/** A CSV cell is text; the field's type says what it stands for. `undefined` leaves it out of the row. */
function cellValue(field: CmsField, cell: string, onError: (message: string) => void): unknown {
  if (cell === '') return undefined;
  switch (field.type) {
    case 'text':
      return unprefixText(cell);
    case 'number':
      // Anything else stays text, so the row check names it ("must be a finite number").
      return NUMBER_RE.test(cell) ? Number(cell) : cell;
    case 'boolean': {
      const b = cell.trim().toLowerCase();
      return b === 'true' ? true : b === 'false' ? false : cell;
    }
    case 'datetime':
      return cell.trim();
    case 'json':
      try {
        return JSON.parse(unprefixText(cell));
      } catch {
        onError('is not valid JSON');
        return undefined;
      }
  }
}

/**
 * Maps a CSV header to the table: every column must be a field, `identifier` or `id`, once.
 * Returns the problems (empty when the header fits).
 */
export function checkCsvHeader(fields: readonly CmsField[], header: readonly string[]): RowProblem[] {
  const names = new Set(fields.map((f) => f.name));
  const seen = new Set<string>();
  const problems: RowProblem[] = [];
  header.forEach((name, i) => {
    if (name === '') problems.push(problem(1, '', `column ${i + 1} has no name`));
    else if (seen.has(name)) problems.push(problem(1, name, 'is named by two columns'));
    else if (!names.has(name) && name !== IDENTIFIER && name !== ID) problems.push(problem(1, name, 'is not a field of this table'));
    seen.add(name);
  });
  return problems;
}

/** A CSV record, mapped by the header (already checked by `checkCsvHeader`). */
export function csvRow(fields: readonly CmsField[], header: readonly string[], line: number, cells: readonly string[]): ImportRow {
  const problems: RowProblem[] = [];
  if (cells.length !== header.length) {
    problems.push(problem(line, '', `has ${cells.length} cell(s); the header names ${header.length} column(s)`));
  }
  const byName = new Map(fields.map((f) => [f.name, f]));
  const data: Record<string, unknown> = {};
  let identifier: string | undefined;
  header.forEach((name, i) => {
    const cell = cells[i] ?? '';
    if (name === IDENTIFIER) {
      identifier = cell === '' ? undefined : unprefixText(cell);
      return;
    }
    const field = byName.get(name);
    if (!field) return;
    const v = cellValue(field, cell, (message) => problems.push(problem(line, name, message)));
    if (v !== undefined) data[name] = v;
  });
  return finish(fields, line, identifier, data, problems);
}

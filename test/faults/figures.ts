import { appendFileSync } from 'node:fs';
import path from 'node:path';
import { expect, inject } from 'vitest';

/** One line of the fault suite's closing table: what a test measured and what it had to be. */
export interface FigureRow {
  file: string;
  test: string;
  figure: string;
  expected: string;
  held: boolean;
}

/**
 * Records a test's outcome as a figure, before asserting on it, so a test that fails still leaves
 * its row in the table (with `held: NO`). Returns `held`.
 */
export function figure(test: string, measured: string | number, expected: string, held: boolean): boolean {
  const file = path.basename(expect.getState().testPath ?? 'unknown').replace(/\.test\.ts$/, '');
  const row: FigureRow = { file, test, figure: String(measured), expected, held };
  appendFileSync(inject('faultFigures'), JSON.stringify(row) + '\n');
  return held;
}

import { defineConfig } from 'vitest/config';

/**
 * The fault suite (`npm run test:faults`): real processes killed, frozen, cut off and fed hostile
 * input. Kept out of `npm test` (its files are slow by design); .ci/run runs both.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.test.ts'],
    globalSetup: ['./test/global-setup.ts', './test/faults/figures-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 300_000,
    hookTimeout: 120_000,
    teardownTimeout: 60_000,
  },
});

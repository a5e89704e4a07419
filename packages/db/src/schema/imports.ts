import { pgSchema } from 'drizzle-orm/pg-core';

/**
 * Where an import's claims tables live, one per `cms.import` job (`queries/import-claims.ts`
 * creates and drops them; they are not declared here because their names are the jobs' ids).
 */
export const importScratch = pgSchema('import_scratch');

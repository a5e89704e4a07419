import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { migrate } from 'drizzle-orm/node-postgres/migrator';
import { createDatabase } from './client';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../migrations');

/** Applies the committed drizzle-kit migrations. Safe to run concurrently (drizzle takes a lock). */
export async function runMigrations(url: string): Promise<void> {
  const database = createDatabase({ url, max: 1, applicationName: 'migrate' });
  try {
    await migrate(database.db, { migrationsFolder: MIGRATIONS_DIR });
  } finally {
    await database.close();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL is not set: say which PostgreSQL to migrate (npm start sets it for you).');
    process.exit(2);
  }
  runMigrations(url).then(
    () => console.log('migrations applied'),
    (err) => {
      console.error('migration failed:', err);
      process.exit(1);
    },
  );
}

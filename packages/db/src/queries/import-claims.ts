import { sql } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { sqlState } from '../errors';

/**
 * Scratch space of a running `cms.import` under `mode=insert`: every identifier the file claims,
 * with the line that claimed it, so a repeat within the file is found while memory stays constant
 * whatever the file's size. One table per import in the `import_scratch` schema (migration 0005):
 * its rows are written in the same chunk transactions as the checkpoint, so a resumed run sees
 * exactly the claims of the committed chunks, and the job drops the whole table when it ends
 * (deleting 1M rows from a shared table took 2–5 s of a 1M-row import, plus the vacuum after).
 * Logged on purpose: an UNLOGGED table is emptied by a PostgreSQL crash while the checkpoints that
 * rely on it survive.
 */
export const IMPORT_SCRATCH_SCHEMA = 'import_scratch';
const PREFIX = 'keys_';

/** The claims table of one import job, schema-qualified and quoted (the name is the job id's hex). */
export function claimsTable(jobId: string): string {
  const hex = jobId.replace(/-/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error(`not a job id: ${jobId}`);
  return `${IMPORT_SCRATCH_SCHEMA}."${PREFIX}${hex}"`;
}

/**
 * Creates the job's claims table if it is not there (a resumed run keeps the one it has), and says
 * whether it had to (a resumed run whose claims are gone must claim again). Claims
 * are not unique: a validate pass claims every valid row and finds the repeats with one query at
 * its end, which needs no index (maintaining one cost 5 s of a 1M-row import); `indexed` adds the
 * index that the per-chunk lookups of an import without a validate pass (`onError=skip`) need.
 */
export async function createClaimsTable(db: DbOrTx, jobId: string, o: { indexed: boolean }): Promise<{ created: boolean }> {
  const t = claimsTable(jobId);
  const found = await db.execute<{ t: string | null }>(sql`select to_regclass(${t})::text as t`);
  const created = !found.rows[0]?.t;
  // Each statement alone: a run that loses a race to create one (a stale run waking up) still makes the other.
  await ignoreRace(db.execute(sql.raw(`create table if not exists ${t} (identifier text not null, line integer not null)`)));
  if (o.indexed) await ignoreRace(db.execute(sql.raw(`create index if not exists "${t.split('"')[1]}_identifier" on ${t} (identifier)`)));
  return { created };
}

/** Two sessions creating one relation at once: one gets a duplicate error, and the relation is there. */
async function ignoreRace(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    const code = sqlState(err);
    if (code !== '42P07' && code !== '23505') throw err;
  }
}

export async function dropClaimsTable(db: DbOrTx, jobId: string): Promise<void> {
  await db.execute(sql.raw(`drop table if exists ${claimsTable(jobId)}`));
}

/**
 * Drops the claims tables whose job row is gone (purged by retention: a failed import keeps its
 * claims for a retry until then). Returns how many were dropped.
 */
export async function dropOrphanClaimTables(db: DbOrTx): Promise<number> {
  const r = await db.execute<{ name: string }>(sql`
    select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${IMPORT_SCRATCH_SCHEMA} and c.relkind = 'r' and c.relname ~ ${`^${PREFIX}[0-9a-f]{32}$`}
      and not exists (
        select 1 from jobs j
        where j.id = regexp_replace(substr(c.relname, ${PREFIX.length + 1}), '(.{8})(.{4})(.{4})(.{4})(.{12})', '\\1-\\2-\\3-\\4-\\5')::uuid
      )`);
  for (const { name } of r.rows) await db.execute(sql.raw(`drop table if exists ${IMPORT_SCRATCH_SCHEMA}."${name}"`));
  return r.rows.length;
}

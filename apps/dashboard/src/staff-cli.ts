import { existsSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  createDatabase,
  createStaffUser,
  deleteStaffUser,
  isConnectionError,
  isUniqueViolation,
  listStaffUsers,
  STAFF_ROLES,
  type Db,
  type StaffRole,
} from '@platform/db';
import { generatePassword, hashPassword } from './passwords';

/**
 * `npm run staff -- add NAME --role viewer|operator [--password P]`, `remove NAME`, `list`.
 * Exit codes: 0 done, 1 the command failed (duplicate, unknown name, database unreachable),
 * 2 usage or configuration error.
 */

export const USAGE = `usage:
  npm run staff -- add NAME --role viewer|operator [--password P]   (a password is generated when none is given)
  npm run staff -- remove NAME
  npm run staff -- list`;

export const USERNAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
export const MIN_PASSWORD_LENGTH = 12;

export type StaffCommand =
  | { kind: 'add'; username: string; role: StaffRole; password?: string }
  | { kind: 'remove'; username: string }
  | { kind: 'list' };

export interface StaffIo {
  out(line: string): void;
  err(line: string): void;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseStaffArgs(argv: string[]): StaffCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { role: { type: 'string' }, password: { type: 'string' } },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const [command, name, ...extra] = parsed.positionals;
  const { role, password } = parsed.values;
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
  const needName = (): string => {
    if (!name) throw new UsageError(`${command} needs a NAME`);
    if (!USERNAME_RE.test(name)) {
      throw new UsageError(`invalid NAME "${name}": letters, digits and . _ @ - only, at most 64, starting with a letter or digit`);
    }
    return name;
  };
  switch (command) {
    case 'add': {
      const username = needName();
      if (!role || !(STAFF_ROLES as readonly string[]).includes(role)) {
        throw new UsageError(`add needs --role ${STAFF_ROLES.join('|')}`);
      }
      if (password !== undefined && password.length < MIN_PASSWORD_LENGTH) {
        throw new UsageError(`--password must be at least ${MIN_PASSWORD_LENGTH} characters (or leave it out to get a generated one)`);
      }
      return { kind: 'add', username, role: role as StaffRole, password };
    }
    case 'remove':
      if (role !== undefined || password !== undefined) throw new UsageError('remove takes only a NAME');
      return { kind: 'remove', username: needName() };
    case 'list':
      if (name !== undefined || role !== undefined || password !== undefined) throw new UsageError('list takes no arguments');
      return { kind: 'list' };
    default:
      throw new UsageError(command ? `unknown command "${command}"` : 'no command given');
  }
}

/** Runs one parsed command against the database; returns the exit code. */
export async function runStaffCommand(db: Db, cmd: StaffCommand, io: StaffIo): Promise<number> {
  switch (cmd.kind) {
    case 'add': {
      const password = cmd.password ?? generatePassword();
      try {
        await createStaffUser(db, { username: cmd.username, role: cmd.role, passwordHash: await hashPassword(password) });
      } catch (err) {
        if (isUniqueViolation(err)) {
          io.err(`a staff account named "${cmd.username}" already exists (remove it first to reset it)`);
          return 1;
        }
        throw err;
      }
      io.out(`added ${cmd.role} "${cmd.username}"`);
      if (!cmd.password) io.out(`password: ${password}\n(shown once: store it now)`);
      return 0;
    }
    case 'remove': {
      if (!(await deleteStaffUser(db, cmd.username))) {
        io.err(`no staff account named "${cmd.username}"`);
        return 1;
      }
      io.out(`removed "${cmd.username}"`);
      return 0;
    }
    case 'list': {
      const users = await listStaffUsers(db);
      if (users.length === 0) {
        io.out('no staff accounts in the database (DASHBOARD_USER, if set, lives in the environment, not here)');
        return 0;
      }
      const width = Math.max(8, ...users.map((u) => u.username.length));
      io.out(`${'USERNAME'.padEnd(width)}  ROLE      CREATED`);
      for (const u of users) io.out(`${u.username.padEnd(width)}  ${u.role.padEnd(8)}  ${u.createdAt.toISOString()}`);
      return 0;
    }
  }
}

/** The repository root, where `npm start` keeps its local data folder `.data/`. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export type DatabaseUrlSource = { url: string; from: 'env' | 'data-dir'; file?: string } | { error: string };

/**
 * DATABASE_URL from the environment, else from `.data/env.json`, which `npm start` writes when it
 * runs its embedded PostgreSQL.
 */
export function resolveDatabaseUrl(env: Record<string, string | undefined>, dataDir = path.join(REPO_ROOT, '.data')): DatabaseUrlSource {
  if (env.DATABASE_URL) return { url: env.DATABASE_URL, from: 'env' };
  const file = path.join(dataDir, 'env.json');
  if (existsSync(file)) {
    try {
      const url = (JSON.parse(readFileSync(file, 'utf8')) as { DATABASE_URL?: unknown }).DATABASE_URL;
      if (typeof url === 'string' && url) return { url, from: 'data-dir', file };
      return { error: `${file} has no DATABASE_URL; set DATABASE_URL to the dashboard's database` };
    } catch (err) {
      return { error: `cannot read ${file}: ${err instanceof Error ? err.message : String(err)}` };
    }
  }
  return {
    error:
      `DATABASE_URL is not set and there is no ${file}.\n` +
      'Set DATABASE_URL to the database the dashboard uses, or run `npm start` once at the repository root ' +
      '(it creates the local data folder and its embedded PostgreSQL).',
  };
}

function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return 'DATABASE_URL';
  }
}

/** Parses, connects, runs; returns the exit code. `main` is this with the real process around it. */
export async function staffCli(argv: string[], env: Record<string, string | undefined>, io: StaffIo, dataDir?: string): Promise<number> {
  let cmd: StaffCommand;
  try {
    cmd = parseStaffArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`${err.message}\n${USAGE}`);
    return 2;
  }
  const source = resolveDatabaseUrl(env, dataDir);
  if ('error' in source) {
    io.err(source.error);
    return 2;
  }
  const database = createDatabase({ url: source.url, max: 1, applicationName: 'staff-cli', connectionTimeoutMs: 5_000 });
  try {
    return await runStaffCommand(database.db, cmd, io);
  } catch (err) {
    if (isConnectionError(err)) {
      const hint =
        source.from === 'data-dir'
          ? `The address comes from ${source.file}: that is the embedded PostgreSQL of \`npm start\`, which accepts connections only while \`npm start\` is running. Start it (in another terminal) and try again.`
          : 'Check that PostgreSQL is running and that DATABASE_URL is right.';
      io.err(`cannot connect to PostgreSQL at ${describeUrl(source.url)}.\n${hint}`);
      return 1;
    }
    throw err;
  } finally {
    await database.close();
  }
}

async function main(): Promise<void> {
  const io: StaffIo = { out: (l) => console.log(l), err: (l) => console.error(l) };
  try {
    process.exitCode = await staffCli(process.argv.slice(2), process.env, io);
  } catch (err) {
    console.error(`staff: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) void main();

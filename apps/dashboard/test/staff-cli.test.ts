import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createDatabase, getStaffUser, type Database } from '@platform/db';
import { cloneTemplateDatabase } from '@platform/db/testing';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { verifyPassword } from '../src/passwords';
import { staffCli, type StaffIo } from '../src/staff-cli';
import { freePort } from '../../../scripts/lib/services';

let clone: Awaited<ReturnType<typeof cloneTemplateDatabase>>;
let database: Database;
let tmp: string;

beforeAll(async () => {
  clone = await cloneTemplateDatabase(inject('pgAdminUrl'));
  database = createDatabase({ url: clone.url, max: 2, applicationName: 'staff-cli-test' });
  tmp = mkdtempSync(path.join(os.tmpdir(), 'staff-cli-'));
});
afterAll(async () => {
  await database?.close();
  await clone?.drop();
  rmSync(tmp, { recursive: true, force: true });
});

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  const io: StaffIo = { out: (l) => out.push(l), err: (l) => err.push(l) };
  return { io, out, err, text: () => out.join('\n'), errors: () => err.join('\n') };
}

async function run(argv: string[], env: Record<string, string | undefined> = { DATABASE_URL: clone.url }, dataDir = path.join(tmp, 'none')) {
  const c = capture();
  const code = await staffCli(argv, env, c.io, dataDir);
  return { code, ...c };
}

describe('npm run staff', () => {
  it('adds, lists and removes accounts', async () => {
    const added = await run(['add', 'alice', '--role', 'operator']);
    expect(added.code).toBe(0);
    const generated = /password: (\S+)/.exec(added.text())?.[1];
    expect(generated).toBeDefined();
    const row = await getStaffUser(database.db, 'alice');
    expect(row?.role).toBe('operator');
    // Stored hashed, salted, and the printed password is the one that works.
    expect(row?.passwordHash).not.toContain(generated!);
    expect(row?.passwordHash).toMatch(/^scrypt\$/);
    expect(await verifyPassword(generated!, row!.passwordHash)).toBe(true);
    expect(await verifyPassword(`${generated}x`, row!.passwordHash)).toBe(false);

    const given = await run(['add', 'bob', '--role', 'viewer', '--password', 'a-chosen-password']);
    expect(given.code).toBe(0);
    expect(given.text()).not.toContain('a-chosen-password');
    expect(await verifyPassword('a-chosen-password', (await getStaffUser(database.db, 'bob'))!.passwordHash)).toBe(true);
    const bobHash = (await getStaffUser(database.db, 'bob'))!.passwordHash;

    const list = await run(['list']);
    expect(list.code).toBe(0);
    expect(list.out[0]).toMatch(/^USERNAME\s+ROLE\s+CREATED$/);
    expect(list.out.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).toEqual([
      ['alice', 'operator'],
      ['bob', 'viewer'],
    ]);

    const duplicate = await run(['add', 'bob', '--role', 'operator', '--password', 'another-password']);
    expect(duplicate.code).toBe(1);
    expect(duplicate.errors()).toMatch(/already exists/);
    expect((await getStaffUser(database.db, 'bob'))!.passwordHash).toBe(bobHash);

    expect((await run(['remove', 'alice'])).code).toBe(0);
    expect((await getStaffUser(database.db, 'alice'))).toBeUndefined();
    const again = await run(['remove', 'alice']);
    expect(again.code).toBe(1);
    expect(again.errors()).toMatch(/no staff account named "alice"/);
    expect((await run(['list'])).out.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['bob']);
  });

  it('refuses bad usage with exit code 2 and the usage text, touching nothing', async () => {
    for (const argv of [
      [],
      ['frobnicate'],
      ['add', 'carol'],
      ['add', 'carol', '--role', 'admin'],
      ['add', 'carol', '--role', 'viewer', '--password', 'short'],
      ['add', 'has:colon', '--role', 'viewer'],
      ['add', 'carol', '--role', 'viewer', '--colour', 'red'],
      ['remove'],
      ['list', 'extra'],
    ]) {
      const r = await run(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.errors()).toContain('usage:');
    }
    expect(await getStaffUser(database.db, 'carol')).toBeUndefined();
  });

  it('falls back to DATABASE_URL in .data/env.json, and says what to do when neither exists', async () => {
    const dataDir = path.join(tmp, 'data');
    const missing = await run(['list'], {}, dataDir);
    expect(missing.code).toBe(2);
    expect(missing.errors()).toMatch(/DATABASE_URL is not set/);
    expect(missing.errors()).toMatch(/npm start/);

    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(path.join(dataDir, 'env.json'), JSON.stringify({ DATABASE_URL: clone.url, REDIS_URL: 'redis://unused' }));
    const viaFile = await run(['add', 'dave', '--role', 'viewer'], {}, dataDir);
    expect(viaFile.code).toBe(0);
    expect((await getStaffUser(database.db, 'dave'))?.role).toBe('viewer');

    // Nothing listens: the embedded database of `npm start` is not running.
    const port = await freePort();
    writeFileSync(path.join(dataDir, 'env.json'), JSON.stringify({ DATABASE_URL: `postgres://postgres:postgres@127.0.0.1:${port}/platform` }));
    const refused = await run(['list'], {}, dataDir);
    expect(refused.code).toBe(1);
    expect(refused.errors()).toMatch(/cannot connect to PostgreSQL/);
    expect(refused.errors()).toMatch(/`npm start` is running/);
  });
});

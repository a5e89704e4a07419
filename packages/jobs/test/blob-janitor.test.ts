import { mkdtempSync, rmSync, utimesSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTeam, insertJob, uuidv7 } from '@platform/db';
import { FsBlobStore, sweepBlobs } from '@platform/jobs';
import { createTestEnv, type TestEnv } from '../../../test/helpers';

let t: TestEnv;
let dir: string;
let blobs: FsBlobStore;
let teamId: string;
const DAY = 86_400_000;

beforeAll(async () => {
  t = await createTestEnv();
  dir = mkdtempSync(path.join(os.tmpdir(), 'janitor-'));
  blobs = new FsBlobStore(dir);
  teamId = (await createTeam(t.database.db, 'janitor')).id;
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await t?.cleanup();
});

async function job(status: 'queued' | 'active' | 'completed' | 'failed' | 'cancelled', finishedDaysAgo = 0) {
  const id = uuidv7();
  await insertJob(t.database.db, { id, teamId, type: 'cms.import', queue: 'cms-import', payload: {}, status });
  if (status !== 'queued' && status !== 'active') {
    await t.database.pool.query(`update jobs set finished_at = now() - make_interval(secs => $2) where id = $1`, [id, finishedDaysAgo * 86_400]);
  }
  return id;
}

async function exists(key: string) {
  return (await blobs.size(key)) !== undefined;
}

describe('blob lifecycle sweep', () => {
  it('deletes uploads of completed jobs, keeps failed and cancelled ones for the retention period, and expires old exports', async () => {
    const keep: string[] = [];
    const drop: string[] = [];
    const put = async (key: string, into: string[]) => {
      await blobs.put(key, 'x');
      into.push(key);
    };
    await put(`imports/${await job('queued')}.csv`, keep);
    await put(`bulk/${await job('active')}.ndjson`, keep);
    await put(`imports/${await job('completed')}.ndjson`, drop);
    await put(`bulk/${await job('cancelled', 1)}.ndjson`, keep); // a cancelled job may be retried too
    await put(`bulk/${await job('cancelled', 8)}.ndjson`, drop);
    await put(`imports/${await job('failed', 1)}.csv`, keep); // a retry may still want it
    await put(`imports/${await job('failed', 8)}.csv`, drop); // past the 7-day retention
    await put(`exports/${await job('completed', 2)}.csv`, keep);
    await put(`exports/${await job('completed', 9)}.ndjson`, drop);
    await put(`exports/parts/${await job('completed', 0)}.1.part`, drop);
    await put(`exports/parts/${await job('active')}.2.part`, keep);
    // A blob whose job was never recorded: left alone for an hour, then removed.
    const fresh = `bulk/${uuidv7()}.ndjson`;
    await put(fresh, keep);
    const stale = `bulk/${uuidv7()}.ndjson`;
    await put(stale, drop);
    const old = (Date.now() - 2 * 3_600_000) / 1000;
    utimesSync(path.join(dir, stale), old, old);

    const out = await sweepBlobs(t.database.db, blobs, { inputRetentionMs: 7 * DAY, exportRetentionMs: 7 * DAY });
    expect(out.scanned).toBe(keep.length + drop.length);
    expect(out.deleted.sort()).toEqual([...drop].sort());
    for (const k of keep) expect(await exists(k), k).toBe(true);
    for (const k of drop) expect(await exists(k), k).toBe(false);
  });
});

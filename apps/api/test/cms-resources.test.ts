import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { bearer, buildTestApi, createTestEnv, type TestEnv } from '../../../test/helpers';
import { count, createProject, createTable, createWorkspace, expectError, insertRows } from './support';

let t: TestEnv;
let api: FastifyInstance;
let ws: Awaited<ReturnType<typeof createWorkspace>>;

beforeAll(async () => {
  t = await createTestEnv();
  api = await buildTestApi(t);
  ws = await createWorkspace(api);
});

afterAll(async () => {
  await api?.close();
  await t?.cleanup();
});

const post = (url: string, payload: unknown, token = ws.token) => api.inject({ method: 'POST', url, headers: bearer(token), payload: payload as object });
const get = (url: string, token = ws.token) => api.inject({ method: 'GET', url, headers: bearer(token) });

describe('projects and revisions', () => {
  it('creates a project: 201 {id, name}', async () => {
    const res = await post('/v1/projects', { name: 'Landing page' });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: 'Landing page' });
  });

  it('refuses a project without a name or with unknown fields (400 with details)', async () => {
    for (const body of [{}, { name: '' }, { name: 5 }, { name: 'ok', extra: 1 }]) {
      const err = expectError(await post('/v1/projects', body), 400, 'validation_failed');
      expect(err.details).toEqual(expect.arrayContaining([expect.objectContaining({ message: expect.any(String) })]));
    }
  });

  it('numbers revisions 1, 2, 3 per project', async () => {
    const p1 = await createProject(api, ws.token);
    const p2 = await createProject(api, ws.token);
    const revs = [];
    for (const data of [{ page: 1 }, [1, 'two'], 'text']) {
      const res = await post(`/v1/projects/${p1}/revisions`, { data });
      expect(res.statusCode).toBe(201);
      expect(Object.keys(res.json()).sort()).toEqual(['id', 'revision']);
      revs.push(res.json().revision);
    }
    expect(revs).toEqual([1, 2, 3]);
    expect((await post(`/v1/projects/${p2}/revisions`, { data: {} })).json().revision).toBe(1);
    const stored = await t.database.pool.query('select revision, data from project_revisions where project_id = $1 order by revision', [p1]);
    expect(stored.rows).toEqual([
      { revision: 1, data: { page: 1 } },
      { revision: 2, data: [1, 'two'] },
      { revision: 3, data: 'text' },
    ]);
  });

  it('gives concurrent revisions of one project distinct consecutive numbers', async () => {
    const p = await createProject(api, ws.token);
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => post(`/v1/projects/${p}/revisions`, { data: { i } })));
    for (const r of answers) expect(r.statusCode, r.body).toBe(201);
    expect(answers.map((r) => r.json().revision).sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it('numbers a revision saved while another save of the project is in flight (no 500 on the race)', async () => {
    const p = await createProject(api, ws.token);
    expect((await post(`/v1/projects/${p}/revisions`, { data: 1 })).json().revision).toBe(1);
    // Another save holds revision 2, uncommitted, while the API computes the next number.
    const other = await t.database.pool.connect();
    try {
      await other.query('begin');
      await other.query(
        `insert into project_revisions (id, project_id, team_id, revision, data) values ($1, $2, $3, 2, '{}')`,
        [randomUUID(), p, ws.team.id],
      );
      const pending = post(`/v1/projects/${p}/revisions`, { data: 3 });
      await new Promise((r) => setTimeout(r, 200));
      await other.query('commit');
      const res = await pending;
      expect(res.statusCode, res.body).toBe(201);
      expect(res.json().revision).toBe(3);
    } finally {
      other.release();
    }
  });

  it('takes any JSON as revision data, null included, but requires the field', async () => {
    const p = await createProject(api, ws.token);
    const res = await post(`/v1/projects/${p}/revisions`, { data: null });
    expect(res.statusCode, res.body).toBe(201);
    expectError(await post(`/v1/projects/${p}/revisions`, {}), 400, 'validation_failed');
  });

  it('answers 404 to revisions of an unknown or malformed project id', async () => {
    expectError(await post(`/v1/projects/${randomUUID()}/revisions`, { data: {} }), 404, 'not_found');
    expectError(await post('/v1/projects/not-a-uuid/revisions', { data: {} }), 404, 'not_found');
  });
});

describe('cms tables', () => {
  const fields = [
    { name: 'title', type: 'text', required: true },
    { name: 'views', type: 'number' },
    { name: 'live', type: 'boolean' },
    { name: 'at', type: 'datetime' },
    { name: 'meta', type: 'json' },
  ];

  it('creates a table: 201 {id, name, fields} with the fields as given', async () => {
    const res = await post(`/v1/projects/${ws.projectId}/cms-tables`, { name: 'articles', fields });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: 'articles', fields });
  });

  it('refuses the reserved field names id and identifier (400)', async () => {
    for (const name of ['id', 'identifier', 'ID', 'Identifier']) {
      const res = await post(`/v1/projects/${ws.projectId}/cms-tables`, { name: 't', fields: [{ name, type: 'text' }] });
      expectError(res, 400, 'validation_failed');
    }
  });

  it('refuses a field defined twice (400)', async () => {
    const res = await post(`/v1/projects/${ws.projectId}/cms-tables`, {
      name: 't',
      fields: [{ name: 'title', type: 'text' }, { name: 'title', type: 'number' }],
    });
    expect(expectError(res, 400, 'validation_failed').message).toMatch(/title/);
  });

  it('refuses an unknown field type (400, naming the field in details)', async () => {
    const res = await post(`/v1/projects/${ws.projectId}/cms-tables`, { name: 't', fields: [{ name: 'title', type: 'varchar' }] });
    const err = expectError(res, 400, 'validation_failed');
    expect(err.details).toEqual([expect.objectContaining({ path: expect.stringContaining('fields.0.type') })]);
  });

  it('creates nothing when it refuses a table', async () => {
    const before = await count(t.database, 'cms_tables');
    await post(`/v1/projects/${ws.projectId}/cms-tables`, { name: 't', fields: [{ name: 'id', type: 'text' }] });
    await post(`/v1/projects/${randomUUID()}/cms-tables`, { name: 't', fields: [] });
    expect(await count(t.database, 'cms_tables')).toBe(before);
  });

  it('answers 404 to a table of an unknown project', async () => {
    expectError(await post(`/v1/projects/${randomUUID()}/cms-tables`, { name: 't', fields: [] }), 404, 'not_found');
  });
});

describe('cms rows', () => {
  let tableId: string;
  let liveIds: string[];
  let draftIds: string[];
  let deletedIds: string[];

  beforeAll(async () => {
    tableId = await createTable(api, ws.token, ws.projectId, undefined, 'rows-table');
    const table = { id: tableId, teamId: ws.team.id };
    // Random (v4) ids: the listing order must come from the ids, not from insertion.
    draftIds = await insertRows(t.database, table, Array.from({ length: 7 }, (_, i) => ({ identifier: `d${i}`, draftData: { title: `draft ${i}` } })));
    liveIds = await insertRows(
      t.database,
      table,
      Array.from({ length: 4 }, (_, i) => ({ identifier: `l${i}`, draftData: { title: `new ${i}` }, data: { title: `live ${i}` } })),
    );
    deletedIds = await insertRows(t.database, table, [
      { identifier: 'gone', draftData: { title: 'gone' }, deleted: true },
      { identifier: 'gone-live', draftData: { title: 'x' }, data: { title: 'x' }, deleted: true },
    ]);
  });

  async function listAll(query: string, limit: number) {
    const pages: { id: string }[][] = [];
    let cursor: string | null = null;
    do {
      const res: LightMyRequestResponse = await get(`/v1/cms-tables/${tableId}/rows?limit=${limit}${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      expect(res.statusCode, res.body).toBe(200);
      expect(Object.keys(res.json()).sort()).toEqual(['nextCursor', 'rows']);
      pages.push(res.json().rows);
      cursor = res.json().nextCursor;
      expect(pages.length).toBeLessThan(20);
    } while (cursor);
    return pages;
  }

  it('lists every row that is not deleted, drafts included, in id order across pages of `limit`', async () => {
    const pages = await listAll('', 3);
    expect(pages.map((p) => p.length)).toEqual([3, 3, 3, 2]);
    const ids = pages.flat().map((r) => r.id);
    expect(ids).toEqual([...draftIds, ...liveIds].sort());
    for (const id of deletedIds) expect(ids).not.toContain(id);
    // published=false is the same as no filter.
    expect((await listAll('&published=false', 500)).flat().map((r) => r.id)).toEqual(ids);
  });

  it('answers nextCursor null on the last page, also when the page is exactly full', async () => {
    const exact = await get(`/v1/cms-tables/${tableId}/rows?limit=11`);
    expect(exact.json().rows).toHaveLength(11);
    expect(exact.json().nextCursor).toBeNull();
    const more = await get(`/v1/cms-tables/${tableId}/rows?limit=10`);
    expect(more.json().nextCursor).toEqual(expect.any(String));
  });

  it('defaults to 50 rows a page and refuses a limit outside 1..500', async () => {
    expect((await get(`/v1/cms-tables/${tableId}/rows`)).json().rows).toHaveLength(11);
    for (const limit of ['0', '501', 'ten', '-1', '1.5']) {
      expectError(await get(`/v1/cms-tables/${tableId}/rows?limit=${limit}`), 400, 'validation_failed');
    }
  });

  it('lists only rows with live data when published=true', async () => {
    const pages = await listAll('&published=true', 3);
    const rows = pages.flat() as unknown as { id: string; data: { title: string } }[];
    expect(rows.map((r) => r.id)).toEqual([...liveIds].sort());
    for (const r of rows) expect(r.data.title).toMatch(/^live /);
  });

  it('refuses a cursor it did not give out (400)', async () => {
    for (const cursor of ['garbage', 'eyJpZCI6MX0', Buffer.from('{"id":"x"}').toString('base64url'), '%00']) {
      expectError(await get(`/v1/cms-tables/${tableId}/rows?cursor=${cursor}`), 400, 'validation_failed');
    }
  });

  it('refuses an unknown published value (400)', async () => {
    expectError(await get(`/v1/cms-tables/${tableId}/rows?published=yes`), 400, 'validation_failed');
  });

  it('gets one row: {id, identifier, data, draftData, updatedAt}', async () => {
    const res = await get(`/v1/cms-tables/${tableId}/rows/${liveIds[0]}`);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      id: liveIds[0],
      identifier: 'l0',
      data: { title: 'live 0' },
      draftData: { title: 'new 0' },
      updatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
    });
    const draft = await get(`/v1/cms-tables/${tableId}/rows/${draftIds[0]}`);
    expect(draft.json()).toMatchObject({ identifier: 'd0', data: null, draftData: { title: 'draft 0' } });
  });

  it('answers 404 to an unknown, malformed or deleted row id, and to a row of another table', async () => {
    for (const rowId of [randomUUID(), 'nope', '1', deletedIds[0]]) {
      expectError(await get(`/v1/cms-tables/${tableId}/rows/${rowId}`), 404, 'not_found');
    }
    expectError(await get(`/v1/cms-tables/${ws.tableId}/rows/${liveIds[0]}`), 404, 'not_found');
  });

  it('answers 404 to the rows of an unknown or malformed table id', async () => {
    expectError(await get(`/v1/cms-tables/${randomUUID()}/rows`), 404, 'not_found');
    expectError(await get('/v1/cms-tables/nope/rows'), 404, 'not_found');
    expectError(await get(`/v1/cms-tables/nope/rows/${liveIds[0]}`), 404, 'not_found');
  });
});

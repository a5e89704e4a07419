/** A thin HTTP client of the v1 contract (shared/API.md), as the studio drives it. */

export interface ApiAnswer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export class ApiError extends Error {
  override name = 'ApiError';
}

export async function apiRequest<T = any>(
  baseUrl: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  opts: { signal?: AbortSignal; expect?: number[] } = {},
): Promise<ApiAnswer<T>> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let payload: string | undefined;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    // Callers that time a request pass the body already serialised, so the timing leaves it out.
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body: payload, signal: opts.signal });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: kept as text for the error message
  }
  if (opts.expect && !opts.expect.includes(res.status)) {
    const err = (parsed as { error?: { code?: string; message?: string } } | null)?.error;
    throw new ApiError(
      `${method} ${path} answered ${res.status}` + (err ? ` ${err.code}: ${err.message}` : ` ${String(text).slice(0, 200)}`),
    );
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export interface Field {
  name: string;
  type: 'text' | 'number' | 'boolean' | 'datetime' | 'json';
  required?: boolean;
}

/** A team's view of the API. */
export class TeamClient {
  constructor(
    readonly baseUrl: string,
    readonly teamId: string,
    readonly token: string,
    private readonly signal?: AbortSignal,
  ) {}

  request<T = any>(method: string, path: string, body?: unknown, expect?: number[]): Promise<ApiAnswer<T>> {
    return apiRequest<T>(this.baseUrl, this.token, method, path, body, { signal: this.signal, expect });
  }

  async createProject(name: string): Promise<{ id: string }> {
    return (await this.request('POST', '/v1/projects', { name }, [201])).body;
  }

  async createTable(projectId: string, name: string, fields: Field[]): Promise<{ id: string }> {
    return (await this.request('POST', `/v1/projects/${projectId}/cms-tables`, { name, fields }, [201])).body;
  }

  /** POSTs a bulk write (body given as an object or already serialised) and returns the 202 job. */
  async bulkWrite(tableId: string, body: string | { operations: unknown[] }): Promise<{ id: string; status: string }> {
    return (await this.request('POST', `/v1/cms-tables/${tableId}/bulk-writes`, body, [202])).body;
  }
}

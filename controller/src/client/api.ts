/**
 * A small typed client for the controller's REST API (`/v1`), used by the operator CLI. Global fetch,
 * a bearer token, a per-request timeout, and every failure turned into a `ClientError` whose `exit`
 * is the CLI's exit code class:
 *
 *   2 usage (the CLI's own), 3 unauthorized/forbidden (401, 403), 4 not found, conflict or validation
 *   (other 4xx), 5 server error (5xx), unreachable, timed out or an unreadable answer.
 *
 * Problem documents (RFC 9457, `application/problem+json`) keep their `code`, `detail` and the
 * per-field `errors` (`services.web.ports[1]: ...`) so the CLI can show them.
 *
 *   const api = new ApiClient({ baseUrl: 'http://127.0.0.1:8080', token });
 *   const { sites } = await api.get<SitesPage>('/sites', { limit: 1000 });
 */
import type { Static } from '@sinclair/typebox';
import type { SiteStatus, StackState } from '../../../protocol/src/index.js';
import type { DeploymentView, RevisionView, SiteView } from '../api/schemas.js';

export type ExitClass = 1 | 2 | 3 | 4 | 5;

export const EXIT = {
  ok: 0,
  /** The command ran, but what it checked is bad (a broken audit chain, a failed or unfinished deployment). */
  failed: 1,
  usage: 2,
  auth: 3,
  invalid: 4,
  server: 5,
  /** Interrupted (Ctrl-C): 128 + SIGINT. */
  interrupted: 130,
} as const;

export interface FieldError {
  readonly path: string;
  readonly message: string;
}

/** Everything that can go wrong talking to the API, with the exit code it maps to. */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    message: string,
    readonly exit: ExitClass,
    /** The API's problem `code` (`forbidden`, `invalid-compose`), or `unreachable`, `timeout`, `bad-response`, `usage`. */
    readonly code: string,
    readonly status?: number,
    readonly errors: readonly FieldError[] = [],
  ) {
    super(message);
  }
}

/** Worth retrying in a watch: the controller is unreachable, slow, or restarting. */
export function isTransient(err: unknown): err is ClientError {
  return (
    err instanceof ClientError &&
    (err.code === 'unreachable' || err.code === 'timeout' || [502, 503, 504].includes(err.status ?? 0))
  );
}

export function usageError(message: string): ClientError {
  return new ClientError(message, EXIT.usage, 'usage');
}

/** The exit code class of an HTTP status. */
export function exitForStatus(status: number): ExitClass {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status >= 400 && status < 500) return EXIT.invalid;
  return EXIT.server;
}

// ---- response types (from the controller's own schemas, so they cannot drift) -----------------

export type Site = Omit<Static<typeof SiteView>, 'state' | 'status'> & {
  state: {
    stacks?: StackState[];
    alarms?: { code: string; since: number; msg?: string; stack?: string }[];
  } | null;
  status: SiteStatus | null;
};
export type SiteDetail = Site & { overrides: unknown; pins: Record<string, number> };
export type Revision = Static<typeof RevisionView>;
export type Deployment = Static<typeof DeploymentView>;
export interface StackInfo {
  name: string;
  latestRev: number;
  createdAt: string;
  createdBy: string;
}
export interface Command {
  site: string;
  seq: number;
  type: string;
  stack: string | null;
  rev: number | null;
  deployment: string | null;
  status: string;
  reason: string | null;
  createdAt: string;
  doneAt: string | null;
  ackedAt: string | null;
}
export interface AuditVerify {
  ok: boolean;
  entries: number;
  head: string;
  badRow?: number;
  reason?: string;
}

// ---- the client ------------------------------------------------------------------------------

export interface ApiClientOptions {
  /** `http://host:port` (a trailing `/` or `/v1` is accepted). */
  readonly baseUrl: string;
  readonly token?: string | undefined;
  /** Per request, default 30 s. */
  readonly timeoutMs?: number;
  /** Aborts every request in flight (Ctrl-C). */
  readonly signal?: AbortSignal;
}

export type Query = Record<string, string | number | boolean | undefined>;

interface RequestOptions {
  readonly query?: Query;
  readonly body?: unknown;
}

export class ApiClient {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly signal: AbortSignal | undefined;

  constructor(private readonly opts: ApiClientOptions) {
    let base: URL;
    try {
      base = new URL(opts.baseUrl);
    } catch {
      throw usageError(`--api: not a URL: ${opts.baseUrl}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:')
      throw usageError(`--api: expected http:// or https://, got ${opts.baseUrl}`);
    this.baseUrl = base.href.replace(/\/+$/, '').replace(/\/v1$/, '');
    this.token = opts.token;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.signal = opts.signal;
  }

  /** The same client, with requests also cut off by `signal` (a watch's deadline). */
  withSignal(signal: AbortSignal): ApiClient {
    return new ApiClient({
      ...this.opts,
      signal: this.signal ? AbortSignal.any([this.signal, signal]) : signal,
    });
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.json<T>('GET', path, query ? { query } : {});
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('POST', path, { body: body ?? {} });
  }
  put<T>(path: string, body?: unknown): Promise<T> {
    return this.json<T>('PUT', path, { body: body ?? {} });
  }
  patch<T>(path: string, body: unknown): Promise<T> {
    return this.json<T>('PATCH', path, { body });
  }
  async delete(path: string): Promise<void> {
    await this.json<unknown>('DELETE', path, {});
  }

  /** A GET whose body is streamed to `write` (audit export); resolves with the byte count. */
  async download(path: string, query: Query, write: (chunk: Uint8Array) => Promise<void>): Promise<number> {
    const res = await this.send('GET', path, { query }, '*/*');
    if (!res.ok) throw await problemOf(res);
    let n = 0;
    if (!res.body) return 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        n += chunk.length;
        await write(chunk);
      }
    } catch (err) {
      throw transportError(err, this.baseUrl, this.timeoutMs);
    }
    return n;
  }

  private async json<T>(method: string, path: string, opts: RequestOptions): Promise<T> {
    const res = await this.send(method, path, opts, 'application/json, application/problem+json');
    if (!res.ok) throw await problemOf(res);
    if (res.status === 204) return undefined as T;
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw transportError(err, this.baseUrl, this.timeoutMs);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ClientError(
        `${method} ${path}: the API answered ${res.status} with a body that is not JSON`,
        EXIT.server,
        'bad-response',
        res.status,
      );
    }
  }

  private async send(method: string, path: string, opts: RequestOptions, accept: string): Promise<Response> {
    const url = new URL(`${this.baseUrl}/v1${path}`);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept };
    if (this.token) headers['authorization'] = `Bearer ${this.token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = this.signal ? AbortSignal.any([timeout, this.signal]) : timeout;
    try {
      return await fetch(url, { method, headers, signal, ...(body !== undefined ? { body } : {}) });
    } catch (err) {
      throw transportError(err, this.baseUrl, this.timeoutMs);
    }
  }
}

function transportError(err: unknown, base: string, timeoutMs: number): ClientError {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError')
    return new ClientError(`no answer from ${base} within ${timeoutMs / 1000} s`, EXIT.server, 'timeout');
  if (e.name === 'AbortError') return new ClientError('interrupted', EXIT.server, 'aborted');
  const why = e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
  return new ClientError(`cannot reach the controller API at ${base} (${why})`, EXIT.server, 'unreachable');
}

/** Reads an error response: a problem document when there is one, else the status line. */
async function problemOf(res: Response): Promise<ClientError> {
  const type = res.headers.get('content-type') ?? '';
  let text = '';
  try {
    text = await res.text();
  } catch {
    // the status is enough
  }
  if (type.includes('json')) {
    try {
      const p = JSON.parse(text) as { code?: unknown; detail?: unknown; title?: unknown; errors?: unknown };
      const code = typeof p.code === 'string' ? p.code : `http-${res.status}`;
      const detail =
        typeof p.detail === 'string' ? p.detail : typeof p.title === 'string' ? p.title : res.statusText;
      const errors = Array.isArray(p.errors)
        ? (p.errors as unknown[]).filter(
            (x): x is FieldError =>
              typeof x === 'object' &&
              x !== null &&
              typeof (x as FieldError).path === 'string' &&
              typeof (x as FieldError).message === 'string',
          )
        : [];
      return new ClientError(detail, exitForStatus(res.status), code, res.status, errors);
    } catch {
      // not a problem document after all
    }
  }
  const snippet = text.trim().split('\n')[0]?.slice(0, 200) ?? '';
  return new ClientError(
    `HTTP ${res.status} ${res.statusText}${snippet ? `: ${snippet}` : ''}`,
    exitForStatus(res.status),
    `http-${res.status}`,
    res.status,
  );
}

/**
 * What every client command shares: the connection options (`--api`, `--token`, `--token-file`,
 * `--request-timeout`), `--json`, argument parsing into usage errors, and the command context.
 *
 * Connection, highest precedence first:
 *   API:   --api URL, $OUTPOST_API, http://127.0.0.1:8080
 *   token: --token T, --token-file FILE, $OUTPOST_TOKEN, .data/admin.token (relative to the working
 *          directory, when it exists; `outpost up` writes its bootstrap admin token there)
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { ApiClient, usageError } from './api.js';
import { type Io, parseDuration } from './io.js';

export const DEFAULT_API = 'http://127.0.0.1:8080';
export const DEFAULT_TOKEN_FILE = '.data/admin.token';

export const GLOBAL_OPTIONS = {
  api: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  'request-timeout': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export const GLOBAL_HELP = `connection (every command):
  --api URL             controller API (env OUTPOST_API, default ${DEFAULT_API})
  --token T             bearer token
  --token-file FILE     read the token from FILE
                        without either: env OUTPOST_TOKEN, else ${DEFAULT_TOKEN_FILE} in the working
                        directory when it exists ('outpost up' writes its bootstrap admin token there)
  --request-timeout S   per-request timeout (default 30s)
  --json                machine-readable output (JSON; JSON lines for --watch)

exit codes: 0 ok, 1 the outcome is bad (broken audit chain, failed or unfinished deployment) or
  a local error, 2 usage, 3 unauthorized or forbidden, 4 not found or invalid, 5 server error or unreachable,
  130 interrupted.
`;

export interface Ctx {
  readonly io: Io;
  readonly json: boolean;
  readonly signal: AbortSignal;
  out(text: string): void;
  err(text: string): void;
  /** The API client (built on first use, so usage errors come before connection errors). */
  api(): ApiClient;
  /** Where the token came from, for the hint on a 401. */
  tokenSource(): string;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with the global options added; unknown options and bad values are usage errors. */
export function parse<O extends Options>(args: readonly string[], options: O) {
  const all = { ...GLOBAL_OPTIONS, ...options };
  try {
    return parseArgs({ args: [...args], options: all, allowPositionals: true, strict: true });
  } catch (err) {
    throw usageError((err as Error).message);
  }
}

export interface GlobalValues {
  api?: string | undefined;
  token?: string | undefined;
  'token-file'?: string | undefined;
  'request-timeout'?: string | undefined;
  json?: boolean | undefined;
}

export function makeCtx(io: Io, v: GlobalValues, signal: AbortSignal): Ctx {
  let client: ApiClient | undefined;
  let source = 'none';
  const readToken = (): string | undefined => {
    if (v.token) {
      source = '--token';
      return v.token;
    }
    if (!v['token-file'] && io.env['OUTPOST_TOKEN']) {
      source = 'OUTPOST_TOKEN';
      return io.env['OUTPOST_TOKEN'];
    }
    const cwd = io.cwd ?? process.cwd();
    const file = v['token-file'] ? resolve(cwd, v['token-file']) : resolve(cwd, DEFAULT_TOKEN_FILE);
    if (!v['token-file'] && !existsSync(file)) return undefined;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw usageError(`--token-file: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
    }
    const token = text.trim();
    if (!token) throw usageError(`the token file ${file} is empty`);
    source = file;
    return token;
  };
  return {
    io,
    json: v.json ?? false,
    signal,
    out: (t) => io.stdout.write(t),
    err: (t) => io.stderr.write(t),
    api() {
      if (client) return client;
      let timeoutMs = 30_000;
      if (v['request-timeout'] !== undefined) {
        const ms = parseDuration(v['request-timeout']);
        if (ms === undefined || ms <= 0)
          throw usageError('--request-timeout: expected seconds, e.g. 30 or 2m');
        timeoutMs = ms;
      }
      client = new ApiClient({
        baseUrl: v.api ?? io.env['OUTPOST_API'] ?? DEFAULT_API,
        token: readToken(),
        timeoutMs,
        signal,
      });
      return client;
    },
    tokenSource: () => source,
  };
}

/** A `--timeout`/`--interval` value in ms, or a usage error naming the option. */
export function durationOpt(
  name: string,
  text: string | undefined,
  dflt: number | undefined,
): number | undefined {
  if (text === undefined) return dflt;
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) throw usageError(`--${name}: expected seconds, e.g. 30, 1.5, 2m`);
  return ms;
}

/** Exactly `n` positionals (or between min and max), else a usage error. */
export function positionals(p: readonly string[], min: number, max: number, what: string): string[] {
  if (p.length < min) throw usageError(`missing ${what}`);
  if (p.length > max) throw usageError(`unexpected argument ${p[max]}`);
  return [...p];
}

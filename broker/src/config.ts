/**
 * Broker configuration: one TypeBox schema is the single source of shape, defaults, environment
 * overrides and the documentation table (`outpost broker --help-config`). Parsed once at start,
 * validated, deep-frozen, passed down.
 *
 * Precedence (later wins): schema defaults < config file (JSON, or YAML by extension) < environment
 * `OUTPOST_BROKER_<PATH>` (e.g. `OUTPOST_BROKER_TLS_PORT`, `OUTPOST_BROKER_LIMITS_MAX_PACKET_BYTES`;
 * arrays comma-separated) < explicit overrides (CLI flags).
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { extname } from 'node:path';
import { type Static, type TObject, type TSchema, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { certsLayout } from '../../certs/src/layout.js';
import { assertPrefix, DEFAULT_PREFIX } from '../../protocol/src/index.js';
import { BrokerError } from './errors.js';
import { ROLES } from './identity.js';

const Port = (def: number, description: string) =>
  Type.Integer({ minimum: 0, maximum: 65535, default: def, description });
const Int = (def: number, min: number, max: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });
const Path = (description: string) =>
  Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description }));
const DAY_MS = 24 * 3600 * 1000;

export const BrokerConfigSchema = Type.Object(
  {
    id: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9_.-]{1,64}$',
        description: 'broker id in $SYS/<id>/...; random if unset',
      }),
    ),
    prefix: Type.String({ default: DEFAULT_PREFIX, description: 'topic prefix (protocol [TOP-1])' }),
    dataDir: Path(
      'folder of broker.db (durable SQLite persistence); in-memory persistence if unset (dev only)',
    ),
    certsDir: Path('`outpost certs` folder; default source of every TLS file and of users.json'),
    usersFile: Path('password user file (scrypt); default <certsDir>/users.json'),
    heartbeatIntervalMs: Int(60_000, 1000, 3_600_000, 'aedes $SYS/<id>/heartbeat interval'),
    tls: Type.Object(
      {
        enabled: Type.Boolean({ default: true, description: 'TLS 1.3 listener with client certificates' }),
        host: Type.String({ default: '0.0.0.0', description: 'TLS bind address' }),
        port: Port(8883, 'TLS port (0 = any free port)'),
        cert: Path('server certificate PEM; default <certsDir>/broker.crt'),
        key: Path('server key PEM; default <certsDir>/broker.key'),
        ca: Path('CA bundle that client certificates must chain to; default <certsDir>/ca.crt'),
        crl: Path('CRL PEM checked on connect and reloaded on change; default <certsDir>/crl.pem'),
        passwordRoles: Type.Array(Type.Union(ROLES.map((r) => Type.Literal(r))), {
          default: ['scada'],
          maxItems: 4,
          description: 'roles that may log in with username/password (no certificate) over TLS',
        }),
        watchCrlMs: Int(2000, 0, 3_600_000, 'poll interval of the CRL file for automatic reload (0 = off)'),
      },
      { default: {}, additionalProperties: false },
    ),
    plain: Type.Object(
      {
        enabled: Type.Boolean({
          default: false,
          description: 'plain TCP listener (loopback only; dev/tests)',
        }),
        host: Type.String({ default: '127.0.0.1', description: 'plain bind address; must be loopback' }),
        port: Port(1883, 'plain TCP port (0 = any free port)'),
        insecureTrustClientId: Type.Boolean({
          default: false,
          description: 'DEV/TESTS ONLY: on the plain listener trust the username role:name without password',
        }),
      },
      { default: {}, additionalProperties: false },
    ),
    metrics: Type.Object(
      {
        enabled: Type.Boolean({ default: true, description: 'Prometheus /metrics endpoint' }),
        host: Type.String({ default: '127.0.0.1', description: 'metrics bind address' }),
        port: Port(9464, 'metrics port (0 = any free port)'),
      },
      { default: {}, additionalProperties: false },
    ),
    limits: Type.Object(
      {
        maxPacketBytes: Int(
          256 * 1024,
          1024,
          268_435_455,
          'largest MQTT packet accepted (connection dropped)',
        ),
        maxTopicLength: Int(256, 16, 65_535, 'longest topic or filter, in characters'),
        maxTopicLevels: Int(16, 1, 100, 'most `/`-separated levels in a topic or filter'),
        maxKeepaliveSec: Int(1800, 1, 65_535, 'largest keepalive a client may ask for'),
        requireKeepalive: Type.Boolean({ default: true, description: 'refuse keepalive 0 (I10 needs it)' }),
        connectTimeoutMs: Int(10_000, 100, 300_000, 'time from TCP/TLS accept to CONNECT'),
        drainTimeoutMs: Int(30_000, 100, 600_000, 'a socket not drained within this is disconnected'),
        maxConnections: Int(20_000, 1, 1_000_000, 'concurrent connections across listeners'),
        listenBacklog: Int(
          4096,
          1,
          65_535,
          'connections the kernel holds before accept (capped by net.core.somaxconn)',
        ),
      },
      { default: {}, additionalProperties: false },
    ),
    // One cap for every persistent session (the persistence applies a single QueueLimits): sized for
    // the controller's ingest session, which holds every site's acks and state while the controller is
    // away; agents' queues stay small anyway (I4). See broker/README.md "Queue cap policy".
    queue: Type.Object(
      {
        maxMessages: Int(
          100_000,
          1,
          10_000_000,
          'per persistent session: messages beyond this are dropped (newest)',
        ),
        maxBytes: Int(
          64 * 1024 * 1024,
          1024,
          2 ** 40,
          'per persistent session: bytes beyond this are dropped (newest)',
        ),
      },
      { default: {}, additionalProperties: false },
    ),
    sessions: Type.Object(
      {
        expiryMs: Int(30 * DAY_MS, 60_000, 3650 * DAY_MS, 'a persistent session unused this long is deleted'),
        sweepIntervalMs: Int(3_600_000, 1000, DAY_MS, 'how often abandoned sessions are looked for'),
      },
      { default: {}, additionalProperties: false },
    ),
    rateLimit: Type.Object(
      {
        perIpBurst: Int(20, 1, 1_000_000, 'connections a source IP may open at once'),
        perIpPerSec: Type.Number({
          minimum: 0.001,
          maximum: 1e6,
          default: 5,
          description: 'refill rate per IP',
        }),
        globalBurst: Int(500, 1, 1_000_000, 'connections all sources may open at once'),
        globalPerSec: Type.Number({
          minimum: 0.001,
          maximum: 1e6,
          default: 200,
          description: 'global refill rate',
        }),
        maxTrackedIps: Int(10_000, 16, 10_000_000, 'source IPs tracked (least recently seen evicted)'),
      },
      { default: {}, additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type BrokerConfig = Static<typeof BrokerConfigSchema>;
/** Deep-partial input (file, env, overrides). */
export type BrokerConfigInput = {
  [K in keyof BrokerConfig]?: BrokerConfig[K] extends object ? Partial<BrokerConfig[K]> : BrokerConfig[K];
};

// ---- environment -----------------------------------------------------------------------------

const ENV_PREFIX = 'OUTPOST_BROKER_';

function snake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

interface Leaf {
  path: string[];
  env: string;
  schema: TSchema;
}

function leaves(schema: TObject, path: string[] = []): Leaf[] {
  const out: Leaf[] = [];
  for (const [key, sub] of Object.entries(schema.properties)) {
    const p = [...path, key];
    if ((sub as TSchema)['type'] === 'object') out.push(...leaves(sub as TObject, p));
    else out.push({ path: p, env: ENV_PREFIX + p.map(snake).join('_'), schema: sub as TSchema });
  }
  return out;
}

const LEAVES = leaves(BrokerConfigSchema);

function fromEnvString(leaf: Leaf, raw: string): unknown {
  const t = leaf.schema['type'];
  if (t === 'integer' || t === 'number') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n))
      throw new BrokerError('config', `${leaf.env}: not a number`);
    return n;
  }
  if (t === 'boolean') {
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new BrokerError('config', `${leaf.env}: not a boolean`);
  }
  if (t === 'array')
    return raw
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  return raw;
}

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let o = target;
  for (const k of path.slice(0, -1)) {
    const next = o[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

/** Config input from `OUTPOST_BROKER_*` variables; unknown ones are reported, not fatal. */
export function configFromEnv(env: NodeJS.ProcessEnv): { input: Record<string, unknown>; unknown: string[] } {
  const input: Record<string, unknown> = {};
  const known = new Set(LEAVES.map((l) => l.env));
  for (const leaf of LEAVES) {
    const raw = env[leaf.env];
    if (raw !== undefined) setPath(input, leaf.path, fromEnvString(leaf, raw));
  }
  const unknown = Object.keys(env).filter((k) => k.startsWith(ENV_PREFIX) && !known.has(k));
  return { input, unknown };
}

// ---- loading ---------------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? merge(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new BrokerError('config', `cannot read ${path}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = /^\.ya?ml$/i.test(extname(path)) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new BrokerError('config', `${path}: ${(err as Error).message}`);
  }
  if (data === null || data === undefined) return {};
  if (!isPlainObject(data)) throw new BrokerError('config', `${path}: top level must be an object`);
  return data;
}

export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

function semantic(c: BrokerConfig): void {
  try {
    assertPrefix(c.prefix);
  } catch (err) {
    throw new BrokerError('config', `prefix: ${(err as Error).message}`);
  }
  if (c.plain.enabled && !isLoopbackHost(c.plain.host)) {
    throw new BrokerError(
      'config',
      `plain.host ${JSON.stringify(c.plain.host)} is not a loopback address: plain TCP is only for ` +
        'local development and tests (use the TLS listener for anything else)',
    );
  }
  if (!c.tls.enabled && !c.plain.enabled) {
    throw new BrokerError('config', 'no listener: enable tls, or plain (loopback) for development');
  }
  if (c.tls.enabled && !c.certsDir && !(c.tls.cert && c.tls.key && c.tls.ca)) {
    throw new BrokerError(
      'config',
      'tls needs certsDir (--certs DIR, from `outpost certs init`) or tls.cert, tls.key and tls.ca',
    );
  }
  if (c.rateLimit.perIpBurst > c.rateLimit.globalBurst) {
    throw new BrokerError('config', 'rateLimit.perIpBurst must not exceed rateLimit.globalBurst');
  }
}

export interface LoadConfigOptions {
  readonly file?: string;
  /** Environment to read `OUTPOST_BROKER_*` from; pass `{}` to ignore the process environment. */
  readonly env?: NodeJS.ProcessEnv;
  readonly overrides?: BrokerConfigInput | Record<string, unknown>;
}

export interface LoadedConfig {
  readonly config: Readonly<BrokerConfig>;
  /** Unknown `OUTPOST_BROKER_*` variables (probably typos); the caller logs them. */
  readonly unknownEnv: readonly string[];
}

/** Defaults < file < env < overrides; validated and frozen. Throws `BrokerError('config')`. */
export function loadConfig(opts: LoadConfigOptions = {}): LoadedConfig {
  const file = opts.file ? readConfigFile(opts.file) : {};
  const { input: env, unknown } = configFromEnv(opts.env ?? process.env);
  const merged = merge(merge(file, env), (opts.overrides ?? {}) as Record<string, unknown>);
  const withDefaults = Value.Default(BrokerConfigSchema, Value.Clone(merged));
  if (!Value.Check(BrokerConfigSchema, withDefaults)) {
    const errs = [...Value.Errors(BrokerConfigSchema, withDefaults)].slice(0, 5);
    const msg = errs.map((e) => `${e.path || '/'}: ${e.message}`).join('; ');
    throw new BrokerError('config', msg || 'invalid configuration');
  }
  const config = withDefaults as BrokerConfig;
  semantic(config);
  return { config: deepFreeze(config), unknownEnv: unknown };
}

/** A frozen config from overrides alone (no file, no environment): what tests and `outpost up` use. */
export function brokerConfig(
  overrides: BrokerConfigInput | Record<string, unknown> = {},
): Readonly<BrokerConfig> {
  return loadConfig({ env: {}, overrides }).config;
}

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly crl: string | undefined;
}

/** TLS file paths: explicit settings, else the `outpost certs` layout under certsDir. */
export function tlsFiles(c: BrokerConfig): TlsFiles {
  const l = c.certsDir ? certsLayout(c.certsDir) : undefined;
  const pick = (v: string | undefined, d: string | undefined, what: string): string => {
    const p = v ?? d;
    if (!p) throw new BrokerError('config', `tls.${what} is not set and there is no certsDir`);
    return p;
  };
  return {
    cert: pick(c.tls.cert, l?.brokerCert, 'cert'),
    key: pick(c.tls.key, l?.brokerKey, 'key'),
    ca: pick(c.tls.ca, l?.caCert, 'ca'),
    crl: c.tls.crl ?? l?.crl,
  };
}

export function usersFilePath(c: BrokerConfig): string | undefined {
  return c.usersFile ?? (c.certsDir ? certsLayout(c.certsDir).usersFile : undefined);
}

/** The generated documentation table (markdown): key, environment variable, default, meaning. */
export function configDocs(): string {
  const rows = LEAVES.map((l) => {
    const def = l.schema['default'];
    const shown = def === undefined ? '' : `\`${JSON.stringify(def)}\``;
    return `| \`${l.path.join('.')}\` | \`${l.env}\` | ${shown} | ${String(l.schema['description'] ?? '')} |`;
  });
  return ['| key | environment | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

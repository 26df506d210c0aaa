/**
 * Controller configuration: one TypeBox schema is the single source of shape, defaults, environment
 * overrides (the `env` annotation on a leaf) and the generated docs table (`configDocs`). Precedence:
 * defaults < config file (YAML or JSON) < environment < command-line flags. Parsed once, frozen.
 */
import { readFileSync } from 'node:fs';
import { type Static, type TObject, type TSchema, Type } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { ApiError } from './errors.js';
import { SparkplugConfigSchema } from './sparkplug/config.js';

const closed = { additionalProperties: false, default: {} } as const;

export const ConfigSchema = Type.Object(
  {
    dataDir: Type.String({
      default: '.data/controller',
      env: 'OUTPOST_DATA',
      description: 'folder of the controller database (controller.db)',
    }),
    certsDir: Type.String({
      default: '.data/certs',
      env: 'OUTPOST_CERTS',
      description: 'certificates and keys, laid out as `outpost certs` writes them (certs/src/layout.ts)',
    }),
    logLevel: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info', env: 'OUTPOST_LOG_LEVEL', description: 'pino log level' },
    ),
    adminToken: Type.Optional(
      Type.String({
        minLength: 24,
        maxLength: 256,
        env: 'OUTPOST_ADMIN_TOKEN',
        description:
          'bootstrap admin token (registered for user `admin`); without it one is generated and printed on first start',
      }),
    ),
    api: Type.Object(
      {
        host: Type.String({
          default: '127.0.0.1',
          env: 'OUTPOST_API_HOST',
          description: 'REST API listen address',
        }),
        port: Type.Integer({
          minimum: 0,
          maximum: 65535,
          default: 8080,
          env: 'OUTPOST_API_PORT',
          description: 'REST API port (0: any free port)',
        }),
        bodyLimit: Type.Integer({
          minimum: 1024,
          maximum: 16 * 1024 * 1024,
          default: 1024 * 1024,
          env: 'OUTPOST_API_BODY_LIMIT',
          description: 'largest accepted request body, bytes',
        }),
      },
      closed,
    ),
    mqtt: Type.Object(
      {
        url: Type.String({
          default: 'mqtts://127.0.0.1:8883',
          env: 'OUTPOST_BROKER',
          description: 'broker URL; mqtts:// uses the CA and controller client certificate from certsDir',
        }),
        clientId: Type.String({
          default: 'controller',
          pattern: '^[A-Za-z0-9_-]{1,64}$',
          description: 'MQTT client id (persistent session)',
        }),
        prefix: Type.String({
          default: 'outpost/v1',
          env: 'OUTPOST_TOPIC_PREFIX',
          description: 'topic prefix',
        }),
        keepalive: Type.Integer({
          minimum: 5,
          maximum: 3600,
          default: 60,
          description: 'MQTT keepalive, seconds',
        }),
        ca: Type.Optional(Type.String({ description: 'CA certificate (default: certsDir/ca.crt)' })),
        cert: Type.Optional(
          Type.String({ description: 'client certificate (default: certsDir/controller.crt)' }),
        ),
        key: Type.Optional(Type.String({ description: 'client key (default: certsDir/controller.key)' })),
      },
      closed,
    ),
    signing: Type.Object(
      {
        kid: Type.Optional(
          Type.String({
            env: 'OUTPOST_SIGNING_KID',
            description: 'kid of the command-signing key (default: the only key in certsDir/signing)',
          }),
        ),
        keyFile: Type.Optional(
          Type.String({
            env: 'OUTPOST_SIGNING_KEY',
            description: 'PKCS#8 PEM (default: certsDir/signing/<kid>.key)',
          }),
        ),
      },
      closed,
    ),
    approver: Type.Object(
      {
        kid: Type.Optional(
          Type.String({
            env: 'OUTPOST_APPROVER_KID',
            description: 'kid of an approve-scoped key: lets admins approve critical deployments',
          }),
        ),
        keyFile: Type.Optional(
          Type.String({ description: 'PKCS#8 PEM (default: certsDir/signing/<kid>.key)' }),
        ),
      },
      closed,
    ),
    outbox: Type.Object(
      {
        window: Type.Integer({
          minimum: 1,
          maximum: 64,
          default: 4,
          env: 'OUTPOST_WINDOW',
          description: 'unacknowledged commands per site at the broker (I4)',
        }),
        retryMs: Type.Integer({
          minimum: 100,
          default: 30_000,
          description: 'first resend of an unacknowledged command',
        }),
        maxRetryMs: Type.Integer({ minimum: 100, default: 600_000, description: 'resend backoff cap' }),
        pollMs: Type.Integer({
          minimum: 100,
          default: 3_600_000,
          description: 'resend period of an accepted command until its final ack (recovers a lost final ack)',
        }),
        tickMs: Type.Integer({
          minimum: 10,
          maximum: 60_000,
          default: 1000,
          description: 'outbox housekeeping period (expiry, heartbeats, retries)',
        }),
        commandTtlSec: Type.Integer({
          minimum: 60,
          default: 7 * 86400,
          description: 'default command lifetime (expires-at = created + ttl)',
        }),
        heartbeatSec: Type.Integer({
          minimum: 0,
          default: 4 * 3600,
          env: 'OUTPOST_HEARTBEAT_SEC',
          description:
            "signed heartbeat to a site idle this long (0: off); keep equal to the agents' heartbeatIntervalSec (SPEC [HB-1])",
        }),
        heartbeatTtlSec: Type.Integer({ minimum: 60, default: 4 * 3600, description: 'heartbeat lifetime' }),
        issueBatch: Type.Integer({
          minimum: 1,
          default: 2000,
          description: 'commands signed per transaction',
        }),
        sendBatch: Type.Integer({ minimum: 1, default: 2000, description: 'publishes started per pass' }),
      },
      closed,
    ),
    /** Sparkplug B edge nodes for SCADA (controller/src/sparkplug, docs/SCADA.md); off by default. */
    sparkplug: SparkplugConfigSchema,
    policy: Type.Object(
      {
        allowTags: Type.Boolean({
          default: false,
          env: 'OUTPOST_ALLOW_TAGS',
          description: 'permit stacks whose images are referenced by tag (pushes must also ask for it)',
        }),
      },
      closed,
    ),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema>;
/** Deep partial config (file contents, flags). */
export type ConfigInput = { [K in keyof Config]?: Config[K] extends object ? Partial<Config[K]> : Config[K] };

const compiled = TypeCompiler.Compile(ConfigSchema);

interface Leaf {
  readonly path: string[];
  readonly schema: TSchema & { env?: string; default?: unknown; description?: string };
}

function leaves(schema: TObject, path: string[] = []): Leaf[] {
  const out: Leaf[] = [];
  for (const [k, s] of Object.entries(schema.properties)) {
    if (s.type === 'object' && 'properties' in s) out.push(...leaves(s as TObject, [...path, k]));
    else out.push({ path: [...path, k], schema: s as Leaf['schema'] });
  }
  return out;
}

function setPath(obj: Record<string, unknown>, path: string[], value: unknown): void {
  let o = obj;
  for (const p of path.slice(0, -1)) {
    if (typeof o[p] !== 'object' || o[p] === null) o[p] = {};
    o = o[p] as Record<string, unknown>;
  }
  o[path[path.length - 1]!] = value;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object'
        ? merge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

function fromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const leaf of leaves(ConfigSchema)) {
    const name = leaf.schema.env;
    const raw = name ? env[name] : undefined;
    if (raw === undefined || raw === '') continue;
    const type = leaf.schema.type;
    const value =
      type === 'integer' || type === 'number'
        ? Number(raw)
        : type === 'boolean'
          ? raw === 'true' || raw === '1'
            ? true
            : raw === 'false' || raw === '0'
              ? false
              : raw
          : raw;
    setPath(out, leaf.path, value);
  }
  return out;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

export interface LoadConfigOptions {
  readonly file?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Command-line flags, highest precedence. */
  readonly overrides?: ConfigInput;
}

/** Builds the effective configuration, or throws ApiError('config-invalid') naming the bad key. */
export function loadConfig(opts: LoadConfigOptions = {}): Readonly<Config> {
  let fileCfg: Record<string, unknown> = {};
  if (opts.file) {
    let text: string;
    try {
      text = readFileSync(opts.file, 'utf8');
    } catch (err) {
      throw new ApiError(
        'config-invalid',
        `cannot read ${opts.file}: ${(err as NodeJS.ErrnoException).code}`,
      );
    }
    const parsed: unknown = parseYaml(text);
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new ApiError('config-invalid', `${opts.file} must hold a map`);
    }
    fileCfg = (parsed ?? {}) as Record<string, unknown>;
  }
  const merged = merge(
    merge(fileCfg, fromEnv(opts.env ?? {})),
    (opts.overrides ?? {}) as Record<string, unknown>,
  );
  const cfg = Value.Default(ConfigSchema, merged);
  if (!compiled.Check(cfg)) {
    const errors = [...compiled.Errors(cfg)].slice(0, 10).map((e) => ({
      path: e.path.slice(1).replaceAll('/', '.') || '(root)',
      message: e.message,
    }));
    throw new ApiError('config-invalid', errors.map((e) => `${e.path}: ${e.message}`).join('; '), errors);
  }
  return deepFreeze(cfg);
}

/** The configuration reference as a Markdown table (key, type, default, environment, meaning). */
export function configDocs(): string {
  const rows = leaves(ConfigSchema).map((l) => {
    const type = l.schema.type ?? (l.schema.anyOf ? 'enum' : 'string');
    const def = l.schema.default === undefined ? '' : `\`${JSON.stringify(l.schema.default)}\``;
    return `| \`${l.path.join('.')}\` | ${type} | ${def} | ${l.schema.env ? `\`${l.schema.env}\`` : ''} | ${l.schema.description ?? ''} |`;
  });
  return ['| key | type | default | env | meaning |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
}

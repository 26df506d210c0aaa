/**
 * Agent configuration: one TypeBox schema is the single source of shape, defaults, environment
 * overrides (`OUTPOST_AGENT_<SNAKE_CASE>`) and the documentation table (`configDocs()`).
 * Parse once at start (`loadConfig`), freeze, pass down.
 *
 * Precedence (lowest first): schema defaults < config file (JSON or YAML) < environment < CLI overrides.
 * Certificate and key paths default to the `certs/` layout under `certsDir` (certs/src/layout.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { certsLayout } from '../../certs/src/layout.js';
import { DEFAULT_PREFIX } from '../../protocol/src/index.js';

/**
 * Default heartbeat interval, seconds: 4 h, the controller's `outbox.heartbeatSec` default too. With
 * keepalive 300 s an idle site then costs 288 keepalive exchanges and 6 heartbeat exchanges (signed
 * heartbeat and its signed ack) a day, within the 20 KB/day budget (DESIGN §7) for any site id; K = 3
 * missed intervals raise `stale-control-plane` after 12 h (SPEC [HB-1]).
 */
export const HEARTBEAT_INTERVAL_SEC = 4 * 3600;

const Ms = (def: number, description: string, minimum = 0) =>
  Type.Integer({ minimum, maximum: 30 * 24 * 3600 * 1000, default: def, description });

export const AgentConfigSchema = Type.Object(
  {
    site: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', description: 'site id (= certificate CN)' }),
    broker: Type.String({
      pattern: '^mqtts?://',
      default: 'mqtts://localhost:8883',
      description: 'broker URL; mqtt:// (plain TCP) only for loopback development and tests',
    }),
    certsDir: Type.String({ default: '/etc/outpost/certs', description: 'certs layout root' }),
    cert: Type.Optional(Type.String({ description: 'MQTT TLS client certificate (default: layout)' })),
    key: Type.Optional(Type.String({ description: 'MQTT TLS client key (default: layout)' })),
    ca: Type.Optional(Type.String({ description: 'CA certificate (default: layout)' })),
    uplinkKey: Type.Optional(Type.String({ description: 'Ed25519 uplink signing key (default: layout)' })),
    trustRoot: Type.Optional(
      Type.String({ description: 'trust root pinned at provisioning (default: layout)' }),
    ),
    dataDir: Type.String({ default: '/var/lib/outpost/agent', description: 'SQLite database folder' }),
    locksDir: Type.Optional(
      Type.String({
        description:
          'update locks: a stack is locked while <locksDir>/<stack>/updates.lock exists; its containers see <locksDir>/<stack> at /run/outpost (default: <dataDir>/locks)',
      }),
    ),
    lockPollMs: Ms(10_000, 'how often a command deferred by an update lock looks at the lock again', 10),
    maintenanceRecheckMs: Ms(
      60_000,
      'longest wait before a command deferred by a closed maintenance window is judged again (clock jumps)',
      10,
    ),
    topicPrefix: Type.String({ default: DEFAULT_PREFIX, description: 'MQTT topic prefix' }),
    keepaliveSec: Type.Integer({
      minimum: 10,
      maximum: 65535,
      default: 300,
      description: 'MQTT keepalive (satellite-friendly; idle budget <= 20 KB/day)',
    }),
    connectTimeoutMs: Ms(30_000, 'MQTT connect timeout', 1000),
    reconnectMinMs: Ms(1_000, 'first reconnect delay (doubles per attempt, with jitter)', 10),
    reconnectMaxMs: Ms(300_000, 'reconnect delay ceiling', 10),
    heartbeatIntervalSec: Type.Integer({
      minimum: 1,
      maximum: 7 * 24 * 3600,
      default: HEARTBEAT_INTERVAL_SEC,
      description:
        "expected interval between signed heartbeats from the controller (keep equal to the controller's outbox.heartbeatSec)",
    }),
    heartbeatMissed: Type.Integer({
      minimum: 1,
      maximum: 100,
      default: 3,
      description: 'K: missed heartbeat intervals before the stale-control-plane alarm',
    }),
    gapHoldMs: Ms(60_000, 'how long a seq gap is held before it is reported and passed ([ORD-3])'),
    settleMs: Ms(
      250,
      'quiet time after the last received command before stack commands run (coalesces bursts)',
    ),
    healthDeadlineMs: Ms(120_000, 'health gate: stack must be healthy within this long after apply'),
    healthRunningForMs: Ms(10_000, 'health gate: services without healthcheck count healthy after this'),
    outboxMaxBytes: Type.Integer({
      minimum: 4096,
      maximum: 1 << 30,
      default: 1 << 20,
      description: 'outbox byte cap (acks never evicted; state coalesced)',
    }),
    stateMinIntervalMs: Ms(5_000, 'minimum interval between state deltas'),
    maxEnvelopeBytes: Type.Integer({
      minimum: 1024,
      maximum: 256 * 1024,
      default: 256 * 1024,
      description: 'command envelope size cap',
    }),
    diskMinFreeBytes: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      default: 32 * 1024 * 1024,
      description: 'below this free space in dataDir commands are not accepted (not PUBACKed)',
    }),
    diskCheckMs: Ms(30_000, 'free-space poll while disk-full', 10),
    journalKeep: Type.Integer({
      minimum: 16,
      maximum: 1_000_000,
      default: 1000,
      description: 'finished journal entries kept',
    }),
    allowTags: Type.Boolean({ default: false, description: 'policy: allow undigested (tag) images' }),
    registryMirror: Type.Optional(Type.String({ description: 'registry mirror for image pulls' })),
    dockerSocket: Type.String({ default: '/var/run/docker.sock', description: 'Docker/Podman socket' }),
    logLevel: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info', description: 'pino log level' },
    ),
  },
  { additionalProperties: false },
);

type Parsed = Static<typeof AgentConfigSchema>;

/** The resolved, frozen configuration: every path is set. */
export type AgentConfig = Readonly<
  Omit<Parsed, 'cert' | 'key' | 'ca' | 'uplinkKey' | 'trustRoot' | 'locksDir'> & {
    locksDir: string;
    cert: string;
    key: string;
    ca: string;
    uplinkKey: string;
    trustRoot: string;
    /** The agent's SQLite database file. */
    dbPath: string;
  }
>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const ENV_PREFIX = 'OUTPOST_AGENT_';

export function envName(key: string): string {
  return ENV_PREFIX + key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
}

function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(AgentConfigSchema.properties)) {
    const raw = env[envName(key)];
    if (raw === undefined || raw === '') continue;
    const type = (schema as TSchema)['type'];
    out[key] = type === 'integer' || type === 'boolean' ? Value.Convert(schema as TSchema, raw) : raw;
  }
  return out;
}

async function readFileConfig(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${file}: ${(err as Error).message}`);
  }
  try {
    const parsed: unknown = /\.ya?ml$/i.test(file)
      ? (await import('yaml')).parse(text)
      : (JSON.parse(text) as unknown);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error('not an object');
    }
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`cannot parse config ${file}: ${(err as Error).message}`);
  }
}

/** Validates and resolves a raw object (defaults applied, paths resolved, frozen). */
export function parseConfig(raw: Record<string, unknown>): AgentConfig {
  const withDefaults = Value.Default(AgentConfigSchema, Value.Clone(raw)) as Record<string, unknown>;
  if (!Value.Check(AgentConfigSchema, withDefaults)) {
    const first = Value.Errors(AgentConfigSchema, withDefaults).First();
    throw new ConfigError(first ? `config ${first.path || '/'}: ${first.message}` : 'config is invalid');
  }
  const c = withDefaults as Parsed;
  if (c.reconnectMaxMs < c.reconnectMinMs) throw new ConfigError('reconnectMaxMs < reconnectMinMs');
  const layout = certsLayout(c.certsDir);
  return Object.freeze({
    ...c,
    cert: c.cert ?? layout.siteCert(c.site),
    key: c.key ?? layout.siteKey(c.site),
    ca: c.ca ?? layout.caCert,
    uplinkKey: c.uplinkKey ?? layout.siteUplinkKey(c.site),
    trustRoot: c.trustRoot ?? layout.trustRoot,
    dbPath: join(c.dataDir, 'agent.db'),
    locksDir: c.locksDir ?? join(c.dataDir, 'locks'),
  });
}

export interface LoadConfigOptions {
  readonly file?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Highest precedence (CLI flags). */
  readonly overrides?: Record<string, unknown>;
}

export async function loadConfig(opts: LoadConfigOptions = {}): Promise<AgentConfig> {
  const fromFile = opts.file ? await readFileConfig(opts.file) : {};
  const merged: Record<string, unknown> = {
    ...fromFile,
    ...envOverrides(opts.env ?? process.env),
  };
  for (const [k, v] of Object.entries(opts.overrides ?? {})) if (v !== undefined) merged[k] = v;
  return parseConfig(merged);
}

/** Markdown table of every setting (for docs): key, env variable, default, description. */
export function configDocs(): string {
  const rows = Object.entries(AgentConfigSchema.properties).map(([key, s]) => {
    const schema = s as TSchema;
    const def = schema['default'] === undefined ? '' : `\`${JSON.stringify(schema['default'])}\``;
    return `| \`${key}\` | \`${envName(key)}\` | ${def} | ${schema['description'] ?? ''} |`;
  });
  return ['| key | env | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

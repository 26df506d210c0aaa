/**
 * Payload schemas (SPEC [PAY-*]). One schema library (TypeBox) across all packages: these schemas
 * validate decoded CBOR and JSON, generate the JSON Schema published in docs, and the TypeScript
 * types below are derived from them. Nothing is a protocol message until it has passed `check`.
 *
 * Wire maps use short text keys; every object is closed (`additionalProperties: false`).
 */
import { FormatRegistry, type Static, type TSchema, Type } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import { KID_PATTERN } from './cose.js';
import { HHMM_PATTERN, isTimeZone, MAX_WINDOWS } from './maintenance.js';
import { ProtocolError, REASON_CODES } from './reasons.js';

export * from './maintenance.js';

export const PROTOCOL_VERSION = 1;

if (!FormatRegistry.Has('date-time')) {
  FormatRegistry.Set(
    'date-time',
    (v) =>
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) &&
      !Number.isNaN(Date.parse(v)),
  );
}

if (!FormatRegistry.Has('iana-tz')) FormatRegistry.Set('iana-tz', isTimeZone);

const closed = { additionalProperties: false } as const;
const U32 = Type.Integer({ minimum: 0, maximum: 0xffff_ffff });
const U53 = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
/** Unix time in whole seconds. */
const Seconds = Type.Integer({ minimum: 0, maximum: 253402300799 });
const SiteId = Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' });
const Name = Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' });
const Kid = Type.String({ pattern: KID_PATTERN.source });
const Bytes = (n: number) => Type.Uint8Array({ minByteLength: n, maxByteLength: n });
const ShortText = (max: number) => Type.String({ maxLength: max });

export const COMMAND_TYPES = [
  'stack.apply',
  'stack.remove',
  'stack.restart',
  'state.request',
  'heartbeat',
  'trust.update',
] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
/** Key scopes in the trust root: command types, plus `approve` for critical-change approvals. */
export const KEY_SCOPES = [...COMMAND_TYPES, 'approve'] as const;
export type KeyScope = (typeof KEY_SCOPES)[number];

// ---- stack spec (the canonical compact form a Compose file is translated into) [PAY-SPEC] ------

export const HealthcheckSchema = Type.Object(
  {
    test: Type.Array(ShortText(1024), { minItems: 1, maxItems: 64 }),
    int: Type.Optional(Type.Integer({ minimum: 1, maximum: 86400 })),
    to: Type.Optional(Type.Integer({ minimum: 1, maximum: 86400 })),
    ret: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    sp: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
  },
  closed,
);

export const ServiceSchema = Type.Object(
  {
    /** Image repository, e.g. `registry.local/acme/historian`. */
    img: Type.String({ minLength: 1, maxLength: 255, pattern: '^[a-z0-9][a-z0-9._:/-]*$' }),
    /** sha256 manifest digest (32 bytes). Required unless site policy allows tags. */
    dig: Type.Optional(Bytes(32)),
    tag: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$' })),
    cmd: Type.Optional(Type.Array(ShortText(4096), { maxItems: 256 })),
    ep: Type.Optional(Type.Array(ShortText(4096), { maxItems: 256 })),
    env: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), ShortText(8192)),
    ),
    /** `[hostIp:]hostPort:containerPort[/proto]`. */
    ports: Type.Optional(
      Type.Array(Type.String({ pattern: '^([0-9.]+:)?[0-9]{1,5}:[0-9]{1,5}(/(tcp|udp))?$' }), {
        maxItems: 64,
      }),
    ),
    /** `volume:/path[:ro]` for named volumes, `/host/path:/path[:ro]` for host mounts (critical). */
    vols: Type.Optional(Type.Array(ShortText(1024), { maxItems: 64 })),
    hc: Type.Optional(HealthcheckSchema),
    rst: Type.Optional(
      Type.Union([
        Type.Literal('no'),
        Type.Literal('always'),
        Type.Literal('unless-stopped'),
        Type.Literal('on-failure'),
      ]),
    ),
    /** Memory limit in bytes. */
    mem: Type.Optional(U53),
    /** CPU limit in millicores. */
    cpu: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    lbl: Type.Optional(Type.Record(ShortText(255), ShortText(1024))),
    user: Type.Optional(ShortText(64)),
    /** Privileged container: critical. */
    priv: Type.Optional(Type.Boolean()),
    /** Network mode; `host` is critical. */
    net: Type.Optional(Type.String({ pattern: '^(bridge|host|none)$' })),
  },
  closed,
);

export const StackSpecSchema = Type.Object(
  {
    svc: Type.Record(Name, ServiceSchema, { minProperties: 1, maxProperties: 64 }),
    vol: Type.Optional(Type.Array(Name, { maxItems: 64 })),
  },
  closed,
);

// ---- maintenance windows [MW] -------------------------------------------------------------------

/** One recurring window: ISO weekday bitmask `d` (bit 0 Monday; absent: daily), local `s`..`e`. */
export const MaintenanceWindowSchema = Type.Object(
  {
    d: Type.Optional(Type.Integer({ minimum: 1, maximum: 0x7f })),
    s: Type.String({ pattern: HHMM_PATTERN }),
    e: Type.String({ pattern: HHMM_PATTERN }),
  },
  closed,
);
/** `mw` of a stack command ([MW-1]): the site's windows in its IANA time zone. */
export const MaintenanceSchema = Type.Object(
  {
    tz: Type.String({ format: 'iana-tz', minLength: 1, maxLength: 64 }),
    w: Type.Array(MaintenanceWindowSchema, { minItems: 1, maxItems: MAX_WINDOWS }),
  },
  closed,
);
/** Fields every stack command may carry ([MW-1], [MW-5]). */
const Gated = {
  mw: Type.Optional(MaintenanceSchema),
  /** Emergency: run now, regardless of maintenance windows and update locks. */
  force: Type.Optional(Type.Literal(true)),
};

// ---- command bodies [PAY-CMD] -------------------------------------------------------------------

export const StackApplyBody = Type.Object(
  {
    stack: Name,
    rev: Type.Integer({ minimum: 1, maximum: 0xffff_ffff }),
    /** The CBOR-encoded StackSpec (deflate-raw when `z`); its sha256 is the spec digest. */
    spec: Type.Uint8Array({ minByteLength: 1, maxByteLength: 192 * 1024 }),
    z: Type.Optional(Type.Literal(true)),
    /** Approvals (COSE_Sign1 StackApproval) for critical specs ([SEC-CRIT]). */
    appr: Type.Optional(Type.Array(Type.Uint8Array({ maxByteLength: 512 }), { maxItems: 16 })),
    ...Gated,
  },
  closed,
);
export const StackRemoveBody = Type.Object(
  {
    stack: Name,
    /** Also delete the stack's named volumes: critical. */
    vols: Type.Optional(Type.Boolean()),
    appr: Type.Optional(Type.Array(Type.Uint8Array({ maxByteLength: 512 }), { maxItems: 16 })),
    ...Gated,
  },
  closed,
);
export const StackRestartBody = Type.Object(
  { stack: Name, svc: Type.Optional(Type.Array(Name, { maxItems: 64 })), ...Gated },
  closed,
);
export const StateRequestBody = Type.Object({ full: Type.Optional(Type.Boolean()) }, closed);
/** `last`: the highest seq the controller has issued to this site (lets the agent see a gap). */
export const HeartbeatBody = Type.Object({ last: U53 }, closed);
export const TrustUpdateBody = Type.Object(
  { doc: Type.Uint8Array({ minByteLength: 1, maxByteLength: 16 * 1024 }) },
  closed,
);

export const COMMAND_BODIES = {
  'stack.apply': StackApplyBody,
  'stack.remove': StackRemoveBody,
  'stack.restart': StackRestartBody,
  'state.request': StateRequestBody,
  heartbeat: HeartbeatBody,
  'trust.update': TrustUpdateBody,
} as const satisfies Record<CommandType, TSchema>;

export const CommandHeaderSchema = Type.Object(
  {
    v: Type.Integer({ minimum: 1, maximum: 255 }),
    site: SiteId,
    seq: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    /**
     * The seq of the command published to this site just before this one (0 for the first). Commands
     * the controller collapsed before publishing them are never sent, so they leave no gap ([ORD-2]).
     */
    prev: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
    id: Bytes(16),
    iat: Seconds,
    exp: Seconds,
    type: Type.String({ maxLength: 32 }),
    body: Type.Unknown(),
  },
  closed,
);

/** Approval of a critical change, signed by an `approve`-scoped key ([SEC-CRIT]). */
export const ApprovalSchema = Type.Object(
  {
    v: Type.Literal(1),
    stack: Name,
    /** Revision for stack.apply; 0 for stack.remove. */
    rev: U32,
    /** sha256 of the spec bytes (stack.apply) or of the UTF-8 string `remove:<stack>` (stack.remove). */
    dig: Bytes(32),
    /** Optional restriction to a set of sites. */
    sites: Type.Optional(Type.Array(SiteId, { maxItems: 10_000 })),
    iat: Seconds,
  },
  closed,
);

// ---- acks [PAY-ACK] ---------------------------------------------------------------------------

export const ACK_STATUSES = [
  'accepted',
  'applied',
  'failed',
  'rejected',
  'superseded',
  'rolled-back',
  'deferred',
] as const;
export type AckStatus = (typeof ACK_STATUSES)[number];

const ReasonCodeSchema = Type.Union(REASON_CODES.map((c) => Type.Literal(c)));

export const AckSchema = Type.Object(
  {
    v: Type.Integer({ minimum: 1, maximum: 255 }),
    site: SiteId,
    /** Per-agent uplink sequence (acks and state share it); lets the controller spot loss. */
    useq: U53,
    at: Seconds,
    st: Type.Union(ACK_STATUSES.map((s) => Type.Literal(s))),
    seq: Type.Optional(U53),
    id: Type.Optional(Bytes(16)),
    /** First 8 bytes of sha256(envelope) when seq/id could not be read from it. */
    ref: Type.Optional(Bytes(8)),
    rc: Type.Optional(ReasonCodeSchema),
    msg: Type.Optional(ShortText(256)),
    type: Type.Optional(Type.String({ maxLength: 32 })),
    stack: Type.Optional(Name),
    rev: Type.Optional(U32),
  },
  closed,
);

// ---- state [PAY-STATE] ------------------------------------------------------------------------

export const HEALTH = ['healthy', 'unhealthy', 'starting', 'stopped', 'unknown'] as const;
export type Health = (typeof HEALTH)[number];
const HealthSchema = Type.Union(HEALTH.map((h) => Type.Literal(h)));

export const ALARM_CODES = [
  'stale-control-plane',
  'disk-full',
  'rolled-back',
  'deferred',
  'seq-gap',
  'db-corrupt',
  'outbox-drops',
  'runtime-unreachable',
  'apply-failed',
] as const;
export type AlarmCode = (typeof ALARM_CODES)[number];

export const AlarmSchema = Type.Object(
  {
    code: Type.Union(ALARM_CODES.map((a) => Type.Literal(a))),
    since: Seconds,
    msg: Type.Optional(ShortText(256)),
    stack: Type.Optional(Name),
  },
  closed,
);

export const ServiceStateSchema = Type.Object(
  {
    n: Name,
    st: Type.String({ maxLength: 32 }),
    h: HealthSchema,
    rs: Type.Optional(U32),
  },
  closed,
);

export const StackStateSchema = Type.Object(
  {
    name: Name,
    /** Revision running now (0: none). */
    rev: U32,
    /** Revision the agent is converging to. */
    want: U32,
    h: HealthSchema,
    svc: Type.Array(ServiceStateSchema, { maxItems: 64 }),
  },
  closed,
);

export const StateSchema = Type.Object(
  {
    v: Type.Integer({ minimum: 1, maximum: 255 }),
    site: SiteId,
    useq: U53,
    at: Seconds,
    /** true: a full snapshot (stacks not listed are absent); false: a delta. */
    full: Type.Boolean(),
    /** Highest command seq applied (done) at the site. */
    last: U53,
    trust: U32,
    stacks: Type.Array(StackStateSchema, { maxItems: 256 }),
    /** Delta only: stacks removed since the previous state. */
    gone: Type.Optional(Type.Array(Name, { maxItems: 256 })),
    alarms: Type.Array(AlarmSchema, { maxItems: 64 }),
    /** Outbox entries dropped by coalescing or the byte cap since boot (I8). */
    drops: Type.Optional(U53),
    agent: Type.Optional(ShortText(64)),
  },
  closed,
);

// ---- trust root [PAY-TRUST] -----------------------------------------------------------------

export const TrustKeySchema = Type.Object(
  {
    kid: Kid,
    pub: Bytes(32),
    types: Type.Array(Type.Union(KEY_SCOPES.map((t) => Type.Literal(t))), { minItems: 1, maxItems: 16 }),
  },
  closed,
);

export const TrustRootSchema = Type.Object(
  {
    v: Type.Literal(1),
    ver: Type.Integer({ minimum: 1, maximum: 0xffff_ffff }),
    iat: Seconds,
    exp: Type.Optional(Seconds),
    roots: Type.Array(Type.Object({ kid: Kid, pub: Bytes(32) }, closed), { minItems: 1, maxItems: 16 }),
    thr: Type.Integer({ minimum: 1, maximum: 16 }),
    keys: Type.Array(TrustKeySchema, { maxItems: 64 }),
    /** Distinct approvals needed for a critical change. */
    crit: Type.Integer({ minimum: 1, maximum: 16 }),
  },
  closed,
);

// ---- SCADA JSON [PAY-STATUS] ------------------------------------------------------------------

export const SiteStatusSchema = Type.Object(
  {
    v: Type.Literal(1),
    site: SiteId,
    online: Type.Boolean(),
    /** ISO 8601 time the publisher wrote this status; consumers compute its age from it. */
    ts: Type.String({ format: 'date-time', maxLength: 40 }),
    agent: Type.Optional(ShortText(64)),
    /** Why offline (e.g. `connection-lost` from the last will). */
    reason: Type.Optional(ShortText(64)),
    stacks: Type.Optional(
      Type.Record(Name, Type.Object({ desired: U32, running: U32, health: HealthSchema }, closed)),
    ),
    alarms: Type.Optional(
      Type.Array(
        Type.Object(
          {
            code: Type.String({ maxLength: 64 }),
            since: Type.String({ maxLength: 40 }),
            msg: Type.Optional(ShortText(256)),
            stack: Type.Optional(Name),
          },
          closed,
        ),
      ),
    ),
    /** Seconds since the agent last heard a signed heartbeat or command from the controller. */
    controlAge: Type.Optional(U53),
    lastSeq: Type.Optional(U53),
  },
  closed,
);

export type StackSpec = Static<typeof StackSpecSchema>;
export type Maintenance = Static<typeof MaintenanceSchema>;
export type Service = Static<typeof ServiceSchema>;
export type Healthcheck = Static<typeof HealthcheckSchema>;
export type StackApply = Static<typeof StackApplyBody>;
export type StackRemove = Static<typeof StackRemoveBody>;
export type StackRestart = Static<typeof StackRestartBody>;
export type StateRequest = Static<typeof StateRequestBody>;
export type Heartbeat = Static<typeof HeartbeatBody>;
export type TrustUpdate = Static<typeof TrustUpdateBody>;
export type Approval = Static<typeof ApprovalSchema>;
export type Ack = Static<typeof AckSchema>;
export type Alarm = Static<typeof AlarmSchema>;
export type ServiceState = Static<typeof ServiceStateSchema>;
export type StackState = Static<typeof StackStateSchema>;
export type State = Static<typeof StateSchema>;
export type TrustKey = Static<typeof TrustKeySchema>;
export type TrustRoot = Static<typeof TrustRootSchema>;
export type SiteStatus = Static<typeof SiteStatusSchema>;

export interface CommandBodies {
  'stack.apply': StackApply;
  'stack.remove': StackRemove;
  'stack.restart': StackRestart;
  'state.request': StateRequest;
  heartbeat: Heartbeat;
  'trust.update': TrustUpdate;
}

/** A decoded, schema-checked command payload. */
export type Command = {
  [T in CommandType]: {
    v: number;
    site: string;
    seq: number;
    prev: number;
    id: Uint8Array;
    iat: number;
    exp: number;
    type: T;
    body: CommandBodies[T];
  };
}[CommandType];

export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

// ---- checking -------------------------------------------------------------------------------

const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();

function checker<T extends TSchema>(schema: T): TypeCheck<T> {
  let c = compiled.get(schema);
  if (!c) {
    c = TypeCompiler.Compile(schema);
    compiled.set(schema, c);
  }
  return c as TypeCheck<T>;
}

/** Validates `value` against `schema` or throws ProtocolError('malformed') naming the first bad path. */
export function check<T extends TSchema>(schema: T, value: unknown, what: string): Static<T> {
  const c = checker(schema);
  if (c.Check(value)) return value as Static<T>;
  const first = c.Errors(value).First();
  const where = first ? `${first.path || '/'}: ${first.message}` : 'invalid';
  throw new ProtocolError('malformed', `${what} ${where}`);
}

export function isCommandType(t: unknown): t is CommandType {
  return typeof t === 'string' && (COMMAND_TYPES as readonly string[]).includes(t);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Cuts `s` to at most `max` UTF-16 code units without splitting a surrogate pair, and replaces any
 * lone surrogate, so the result always encodes as valid UTF-8 ([LIM-2]).
 */
export function clipText(s: string, max: number): string {
  let out = s.length > max ? s.slice(0, max) : s;
  const last = out.charCodeAt(out.length - 1);
  if (out.length < s.length && last >= 0xd800 && last <= 0xdbff) out = out.slice(0, -1);
  return out.replace(LONE_SURROGATE, '\uFFFD');
}

/** TypeBox schemas shared by the routes (request validation and the OpenAPI document). */
import { type TSchema, Type } from '@sinclair/typebox';
import { LABEL_KEY, LABEL_VALUE } from '../selector.js';

export const SITE_ID = '^[a-z0-9][a-z0-9_-]{0,62}$';
export const NAME = '^[a-z0-9][a-z0-9_.-]{0,62}$';
/** Group names; `*` is reserved for "all groups" in user scopes. */
export const GROUP = '^[a-z0-9][a-z0-9_.-]{0,62}$';

export const SiteId = Type.String({
  pattern: SITE_ID,
  description: 'site id (= MQTT client id = certificate CN)',
});
export const Name = Type.String({ pattern: NAME });
export const GroupName = Type.String({ pattern: GROUP });
export const Time = Type.String({ format: 'date-time' });
export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const Labels = Type.Record(
  Type.String({ pattern: LABEL_KEY.source }),
  Type.String({ pattern: LABEL_VALUE.source }),
  { maxProperties: 64, description: 'labels matched by selectors such as `region=north,tier=edge`' },
);
export const Groups = Type.Array(GroupName, { maxItems: 64, uniqueItems: true });
export const EnvMap = Type.Record(
  Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }),
  Type.String({ maxLength: 8192 }),
  {
    maxProperties: 256,
  },
);

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable error code (controller/src/errors.ts, protocol reason codes)' }),
    errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
  },
  { $id: 'Problem', description: 'RFC 9457 problem document (application/problem+json)' },
);

/** Standard error responses for the OpenAPI document. */
export function errors(...codes: number[]): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (const c of [400, 401, 403, ...codes]) out[c] = { $ref: 'Problem#', description: 'problem document' };
  return out;
}

export const Limit = Type.Integer({ minimum: 1, maximum: 10_000, default: 100 });

export const SiteParams = Type.Object({ site: SiteId }, { additionalProperties: false });

export const SiteView = Type.Object({
  id: SiteId,
  labels: Labels,
  groups: Type.Array(Type.String()),
  enrolledAt: Time,
  uplinkKey: Type.String({ description: 'Ed25519 uplink public key, base64 (32 bytes)' }),
  online: Nullable(
    Type.Boolean({
      description: 'from the retained status (last will); false when stale; null: never heard',
    }),
  ),
  stale: Type.Boolean({
    description: 'status says online but the site has been silent for over 3 heartbeat intervals',
  }),
  lastContact: Nullable(Time),
  age: Nullable(Type.Number({ description: 'seconds since the last message from the site' })),
  status: Nullable(Type.Unknown({ description: 'the retained SiteStatus JSON' })),
  statusAge: Nullable(Type.Number()),
  state: Nullable(Type.Unknown({ description: 'merged signed state: stacks, alarms, last applied seq' })),
  stateAge: Nullable(Type.Number()),
  seq: Type.Object({ allocated: Type.Integer(), issued: Type.Integer() }),
});

export const CommandView = Type.Object({
  site: Type.String(),
  seq: Type.Integer(),
  id: Type.String({ description: 'command id, hex' }),
  type: Type.String(),
  stack: Nullable(Type.String()),
  rev: Nullable(Type.Integer()),
  deployment: Nullable(Type.String()),
  status: Type.String({
    description:
      'pending|published|accepted|deferred|applied|failed|rejected|superseded|rolled-back|expired|cancelled',
  }),
  reason: Nullable(Type.String()),
  prev: Nullable(Type.Integer()),
  ref: Nullable(Type.String({ description: 'first 8 bytes of sha256(envelope), hex' })),
  specDigest: Nullable(Type.String()),
  createdAt: Time,
  createdBy: Type.String(),
  expiresAt: Time,
  issuedAt: Nullable(Time),
  lastSentAt: Nullable(Time),
  attempts: Type.Integer(),
  ackedAt: Nullable(Time),
  doneAt: Nullable(Time),
  supersededBy: Nullable(Type.Integer()),
});

export const AckView = Type.Object({
  n: Type.Integer(),
  site: Type.String(),
  useq: Type.Integer(),
  at: Time,
  st: Type.String(),
  seq: Nullable(Type.Integer()),
  id: Nullable(Type.String()),
  ref: Nullable(Type.String()),
  rc: Nullable(Type.String()),
  msg: Nullable(Type.String()),
  matched: Type.Boolean(),
  receivedAt: Time,
});

export const RevisionView = Type.Object({
  stack: Type.String(),
  rev: Type.Integer(),
  digest: Type.String({ description: 'sha256 of the spec bytes as carried, hex' }),
  composeDigest: Type.String(),
  compressed: Type.Boolean(),
  specBytes: Type.Integer(),
  critical: Type.Array(Type.String()),
  allowTags: Type.Boolean(),
  createdBy: Type.String(),
  createdAt: Time,
});

export const DeploymentView = Type.Object({
  id: Type.String(),
  stack: Type.String(),
  rev: Type.Integer(),
  target: Type.Unknown(),
  createdBy: Type.String(),
  createdAt: Time,
  commands: Type.Array(Type.Object({ site: Type.String(), seq: Type.Integer(), status: Type.String() })),
  skipped: Type.Array(
    Type.Object({ site: Type.String(), reason: Type.String(), pinnedRev: Type.Optional(Type.Integer()) }),
  ),
  counts: Type.Record(Type.String(), Type.Integer()),
});

/**
 * A rollout's definition: the API request schema (TypeBox; ranges are checked there, so an
 * out-of-range threshold is a 400 naming the field), its normalised form stored with the rollout,
 * and the phase plan (canary, then fixed-size or exponential batches) computed from it.
 */
import { type Static, Type } from '@sinclair/typebox';
import { RolloutError } from './errors.js';

const Closed = { additionalProperties: false } as const;
const OneOf = { additionalProperties: false, minProperties: 1, maxProperties: 1 } as const;
const Percent = Type.Number({ exclusiveMinimum: 0, maximum: 100 });

export const StrategySchema = Type.Object(
  {
    canary: Type.Optional(
      Type.Object(
        {
          count: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
          percent: Type.Optional(Percent),
        },
        { ...OneOf, description: 'first phase: `count` sites or `percent` of the target (at least 1)' },
      ),
    ),
    batches: Type.Optional(
      Type.Object(
        {
          size: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
          percent: Type.Optional(Percent),
          exponential: Type.Optional(
            Type.Object(
              {
                initial: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
                factor: Type.Optional(Type.Number({ minimum: 1.1, maximum: 10 })),
              },
              Closed,
            ),
          ),
        },
        {
          ...OneOf,
          description:
            'after the canary: fixed `size`, fixed `percent` of the target, or `exponential` (initial ' +
            'default the canary size, factor default 2). Default: the rest in one batch.',
        },
      ),
    ),
  },
  Closed,
);

export const RolloutBodySchema = Type.Object(
  {
    id: Type.Optional(
      Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$', description: 'default: r-<16 hex>' }),
    ),
    stack: Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' }),
    rev: Type.Optional(Type.Integer({ minimum: 1, description: 'default: the latest revision' })),
    target: Type.Object(
      {
        sites: Type.Optional(
          Type.Array(Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' }), {
            minItems: 1,
            maxItems: 100_000,
            uniqueItems: true,
          }),
        ),
        group: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
        selector: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
      },
      { ...OneOf, description: 'exactly one of sites, group, selector' },
    ),
    strategy: Type.Optional(StrategySchema),
    successThreshold: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1,
        description: 'fraction of a phase’s (not skipped) sites that must be healthy to advance (default 1)',
      }),
    ),
    failureThreshold: Type.Optional(
      Type.Object(
        {
          count: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
          percent: Type.Optional(Percent),
        },
        {
          ...OneOf,
          description:
            'abort as soon as this many sites (or this percentage of the target) failed (default count 1)',
        },
      ),
    ),
    deadlineSec: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 30 * 86400,
        description: 'per site, from its command: healthy by then or failed (default 3600)',
      }),
    ),
    healthSec: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 86400,
        description:
          'health gate: the site reports the revision healthy this long after applied (default 60)',
      }),
    ),
    delaySec: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 7 * 86400, description: 'pause between phases (default 0)' }),
    ),
    offline: Type.Optional(
      Type.Union([Type.Literal('wait'), Type.Literal('skip')], {
        description:
          'wait (default): an offline site gets the revision when it reconnects, failed at its deadline; ' +
          'skip: an offline site is skipped (at its phase start, or offline at its deadline)',
      }),
    ),
    approval: Type.Optional(
      Type.Boolean({ description: 'wait for POST :id/approve before each phase after the first' }),
    ),
    rollback: Type.Optional(
      Type.Boolean({
        description: 'on abort, roll touched sites back to their previous revision (default true)',
      }),
    ),
    ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 365 * 86400 })),
    approve: Type.Optional(
      Type.Boolean({
        description: 'admin only: approve a critical revision with the controller approver key',
      }),
    ),
  },
  Closed,
);
export type RolloutBody = Static<typeof RolloutBodySchema>;

/** The normalised definition stored with a rollout (every default filled in). */
export interface Definition {
  readonly canary: { readonly count: number } | { readonly percent: number };
  readonly batches:
    | { readonly kind: 'rest' }
    | { readonly kind: 'size'; readonly size: number }
    | { readonly kind: 'percent'; readonly percent: number }
    | { readonly kind: 'exponential'; readonly initial?: number; readonly factor: number };
  readonly successThreshold: number;
  readonly failureThreshold: { readonly count: number } | { readonly percent: number };
  readonly deadlineSec: number;
  readonly healthSec: number;
  readonly delaySec: number;
  readonly offline: 'wait' | 'skip';
  readonly approval: boolean;
  readonly rollback: boolean;
  readonly ttlSec: number;
  readonly approve: boolean;
}

export const DEFAULTS = { deadlineSec: 3600, healthSec: 60, delaySec: 0, successThreshold: 1 } as const;

export function normalise(b: RolloutBody, defaultTtlSec: number): Definition {
  const s = b.strategy ?? {};
  const canary =
    s.canary?.percent !== undefined ? { percent: s.canary.percent } : { count: s.canary?.count ?? 1 };
  let batches: Definition['batches'] = { kind: 'rest' };
  if (s.batches?.size !== undefined) batches = { kind: 'size', size: s.batches.size };
  else if (s.batches?.percent !== undefined) batches = { kind: 'percent', percent: s.batches.percent };
  else if (s.batches?.exponential) {
    const e = s.batches.exponential;
    batches = {
      kind: 'exponential',
      factor: e.factor ?? 2,
      ...(e.initial !== undefined ? { initial: e.initial } : {}),
    };
  }
  const f = b.failureThreshold;
  const deadlineSec = b.deadlineSec ?? DEFAULTS.deadlineSec;
  const healthSec = b.healthSec ?? DEFAULTS.healthSec;
  if (healthSec >= deadlineSec) {
    throw new RolloutError(
      'bad-rollout',
      `healthSec (${healthSec}) must be shorter than deadlineSec (${deadlineSec}): no site could pass the health gate in time`,
      [{ path: 'body.healthSec', message: `must be < deadlineSec (${deadlineSec})` }],
    );
  }
  return {
    canary,
    batches,
    successThreshold: b.successThreshold ?? DEFAULTS.successThreshold,
    failureThreshold: f?.percent !== undefined ? { percent: f.percent } : { count: f?.count ?? 1 },
    deadlineSec,
    healthSec,
    delaySec: b.delaySec ?? DEFAULTS.delaySec,
    offline: b.offline ?? 'wait',
    approval: b.approval ?? false,
    rollback: b.rollback ?? true,
    ttlSec: b.ttlSec ?? Math.max(defaultTtlSec, deadlineSec + 60),
    approve: b.approve ?? false,
  };
}

const ofTotal = (total: number, percent: number): number =>
  Math.max(1, Math.ceil((total * percent) / 100 - 1e-9));

/** Phase sizes for `total` sites: the canary first, then the batches; they add up to `total`. */
export function phaseSizes(def: Definition, total: number): number[] {
  if (total === 0) return [];
  const canary = Math.min(
    total,
    'count' in def.canary ? def.canary.count : ofTotal(total, def.canary.percent),
  );
  const sizes = [canary];
  let left = total - canary;
  const b = def.batches;
  let next = b.kind === 'exponential' ? (b.initial ?? canary) : 0;
  while (left > 0) {
    let n: number;
    switch (b.kind) {
      case 'rest':
        n = left;
        break;
      case 'size':
        n = b.size;
        break;
      case 'percent':
        n = ofTotal(total, b.percent);
        break;
      case 'exponential':
        n = Math.max(1, Math.round(next));
        next *= b.factor;
        break;
    }
    n = Math.min(n, left);
    sizes.push(n);
    left -= n;
  }
  return sizes;
}

/** The failure count at which a rollout of `total` sites aborts. */
export function failureLimit(def: Definition, total: number): number {
  return 'count' in def.failureThreshold
    ? def.failureThreshold.count
    : Math.max(1, Math.ceil((total * def.failureThreshold.percent) / 100 - 1e-9));
}

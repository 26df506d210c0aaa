/** fast-check arbitraries for the protocol property tests: CBOR values, valid messages, mutations. */
import fc from 'fast-check';
import { type Ack, COMMAND_TYPES, type Command, REASON_CODES, type State } from '../../protocol/src/index.js';

const key = fc.string({ unit: 'binary', maxLength: 12 }).filter((k) => k !== '__proto__');
export const { value: cborValue } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', maxDepth: 6 },
    fc.maxSafeInteger(),
    fc.integer(),
    fc.double({ noNaN: true }).filter((d) => !Object.is(d, -0)),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.uint8Array({ maxLength: 40 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 6 }),
    fc.dictionary(key, tie('value'), { maxKeys: 6, noNullPrototype: true }),
  ),
}));

const siteId = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,62}$/);
const name = fc.stringMatching(/^[a-z0-9][a-z0-9_.-]{0,62}$/);
const u53 = fc.maxSafeInteger().map(Math.abs);
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const MAX_SECONDS = 253402300799;
const appr = fc.array(fc.uint8Array({ maxLength: 512 }), { maxLength: 4 });

const bodies: Record<(typeof COMMAND_TYPES)[number], fc.Arbitrary<unknown>> = {
  'stack.apply': fc.record(
    {
      stack: name,
      rev: fc.integer({ min: 1, max: 0xffff_ffff }),
      spec: fc.uint8Array({ minLength: 1, maxLength: 600 }),
      z: fc.constant(true),
      appr,
    },
    { requiredKeys: ['stack', 'rev', 'spec'] },
  ),
  'stack.remove': fc.record({ stack: name, vols: fc.boolean(), appr }, { requiredKeys: ['stack'] }),
  'stack.restart': fc.record(
    { stack: name, svc: fc.array(name, { maxLength: 5 }) },
    { requiredKeys: ['stack'] },
  ),
  'state.request': fc.record({ full: fc.boolean() }, { requiredKeys: [] }),
  heartbeat: fc.record({ last: u53 }),
  'trust.update': fc.record({ doc: fc.uint8Array({ minLength: 1, maxLength: 600 }) }),
};

export const commandArb: fc.Arbitrary<Command> = fc
  .record({
    site: siteId,
    seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    prevFrac: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
    id: bytes(16),
    iat: fc.integer({ min: 0, max: MAX_SECONDS - 1 }),
    life: fc.integer({ min: 1, max: 10 * 365 * 86_400 }),
    type: fc.constantFrom(...COMMAND_TYPES),
  })
  .chain((h) =>
    bodies[h.type].map(
      (body) =>
        ({
          v: 1,
          site: h.site,
          seq: h.seq,
          prev: Math.floor(h.prevFrac * h.seq),
          id: h.id,
          iat: h.iat,
          exp: Math.min(h.iat + h.life, MAX_SECONDS),
          type: h.type,
          body,
        }) as Command,
    ),
  );

// Uplink kids are `site:<id>` and kids are at most 64 characters ([ENV-2]), so ids here stay <= 59.
const uplinkSite = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,58}$/);
const msg = fc.string({ unit: 'binary', maxLength: 100 });
export const ackArb: fc.Arbitrary<Ack> = fc.record(
  {
    v: fc.constant(1),
    site: uplinkSite,
    useq: u53,
    at: fc.integer({ min: 0, max: MAX_SECONDS }),
    st: fc.constantFrom('accepted', 'applied', 'failed', 'rejected', 'superseded', 'rolled-back', 'deferred'),
    seq: u53,
    id: bytes(16),
    ref: bytes(8),
    rc: fc.constantFrom(...REASON_CODES),
    msg,
    type: fc.string({ maxLength: 32 }),
    stack: name,
    rev: u32,
  },
  { requiredKeys: ['v', 'site', 'useq', 'at', 'st'] },
);
const health = fc.constantFrom('healthy', 'unhealthy', 'starting', 'stopped', 'unknown');
export const stateArb: fc.Arbitrary<State> = fc.record(
  {
    v: fc.constant(1),
    site: uplinkSite,
    useq: u53,
    at: fc.integer({ min: 0, max: MAX_SECONDS }),
    full: fc.boolean(),
    last: u53,
    trust: u32,
    stacks: fc.array(
      fc.record({
        name,
        rev: u32,
        want: u32,
        h: health,
        svc: fc.array(
          fc.record(
            { n: name, st: fc.string({ maxLength: 32 }), h: health, rs: u32 },
            { requiredKeys: ['n', 'st', 'h'] },
          ),
          { maxLength: 4 },
        ),
      }),
      { maxLength: 4 },
    ),
    gone: fc.array(name, { maxLength: 4 }),
    alarms: fc.array(
      fc.record(
        { code: fc.constantFrom('seq-gap', 'disk-full', 'rolled-back'), since: u32, msg, stack: name },
        { requiredKeys: ['code', 'since'] },
      ),
      { maxLength: 3 },
    ),
    drops: u53,
    agent: fc.string({ maxLength: 64 }),
  },
  { requiredKeys: ['v', 'site', 'useq', 'at', 'full', 'last', 'trust', 'stacks', 'alarms'] },
);

// ---- mutations of valid envelopes --------------------------------------------------------------

export type Mutation =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'truncate'; at: number }
  | { k: 'insert'; at: number; b: Uint8Array }
  | { k: 'huge'; at: number; head: number }
  | { k: 'tag'; at: number; head: Uint8Array }
  | { k: 'nest'; at: number; depth: number };

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    k: fc.constant('insert' as const),
    at: fc.nat(),
    b: fc.uint8Array({ minLength: 1, maxLength: 12 }),
  }),
  fc.record({
    k: fc.constant('huge' as const),
    at: fc.nat(),
    head: fc.constantFrom(0x5b, 0x7b, 0x9b, 0xbb, 0xdb, 0x5a, 0x9a, 0xba),
  }),
  fc.record({
    k: fc.constant('tag' as const),
    at: fc.nat(),
    head: fc.constantFrom(
      Uint8Array.of(0xc0),
      Uint8Array.of(0xd2),
      Uint8Array.of(0xd8, 0x62),
      Uint8Array.of(0xd9, 0xd9, 0xf7),
      Uint8Array.of(0xd9, 0x01, 0x03),
    ),
  }),
  fc.record({ k: fc.constant('nest' as const), at: fc.nat(), depth: fc.integer({ min: 1, max: 300 }) }),
);

export function mutate(env: Uint8Array, m: Mutation): Uint8Array {
  const at = m.at % (env.length + 1);
  const ins = (b: ArrayLike<number>, skip = 0) =>
    new Uint8Array([...env.subarray(0, at), ...Array.from(b), ...env.subarray(at + skip)]);
  switch (m.k) {
    case 'flip': {
      const out = Uint8Array.from(env);
      out[at % env.length]! ^= 1 << m.bit;
      return out;
    }
    case 'truncate':
      return env.subarray(0, at);
    case 'insert':
      return ins(m.b);
    case 'huge':
      return ins([m.head, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff].slice(0, m.head & 1 ? 9 : 5), 1);
    case 'tag':
      return ins(m.head);
    case 'nest':
      return ins(new Uint8Array(m.depth).fill(0x81));
  }
}

/**
 * Property tests (fast-check) for the codecs and the open* functions (I9: bad input is harmless).
 * - round trips: arbitrary JSON-like CBOR values; arbitrary valid commands, acks and states;
 * - totality: random bytes and mutated valid envelopes (bit flips, truncations, insertions, huge
 *   lengths, tags, deep nesting) only ever succeed or throw a ProtocolError with a rejection code.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  COMMAND_LIMITS,
  COMMAND_TYPES,
  createSigner,
  decode,
  encode,
  encodeAck,
  encodeApproval,
  encodeCommand,
  encodeState,
  encodeTrustRoot,
  nodeEd25519,
  type OpenCommandContext,
  openAck,
  openCommand,
  openState,
  openTrustRoot,
  ProtocolError,
  parseSign1,
  type ReasonCode,
  type Signer,
  sign1,
  siteKid,
} from '../../protocol/src/index.js';
import { ackArb, cborValue, commandArb, mutate, mutation, stateArb } from './arbitraries.js';
import {
  ack,
  approver1,
  command,
  controller,
  NOW,
  root1,
  SITE,
  seedOf,
  siteKeys,
  siteSigner,
  state,
  trust,
  trustDoc,
} from './helpers.js';

/** Codes an open* / decode function may reject with. */
const REJECTIONS = new Set<ReasonCode>([
  'bad-signature',
  'unknown-key',
  'expired',
  'wrong-site',
  'malformed',
  'too-large',
  'unsupported-version',
  'unknown-type',
  'trust-version',
  'trust-threshold',
  'not-yet-valid',
]);

/** Succeeds, or throws a ProtocolError with a rejection code; anything else fails the property. */
function harmless(fn: () => unknown): ReasonCode | 'ok' {
  try {
    fn();
    return 'ok';
  } catch (err) {
    // Plain checks, not expect(): this runs ~100k times.
    if (!(err instanceof ProtocolError)) throw new Error(`threw ${String(err)}`, { cause: err });
    if (!REJECTIONS.has(err.code)) throw new Error(`unexpected reason code ${err.code}`, { cause: err });
    return err.code;
  }
}

const ctx: OpenCommandContext = { site: SITE, trust, nowSec: NOW };
const v1 = trustDoc();
const TARGETS: Record<string, (b: Uint8Array) => unknown> = {
  decode: (b) => decode(b),
  parseSign1: (b) => parseSign1(b, COMMAND_LIMITS),
  openCommand: (b) => openCommand(b, ctx),
  openAck: (b) => openAck(b, siteKeys),
  openState: (b) => openState(b, siteKeys, SITE),
  openTrustRoot: (b) => openTrustRoot(b, { current: v1 }),
  openTrustRootGenesis: (b) => openTrustRoot(b),
};
const throughAll = (b: Uint8Array) => {
  for (const fn of Object.values(TARGETS)) harmless(() => fn(b));
};

// ---- round trips -------------------------------------------------------------------------------

describe('round trips [CBOR-1]', () => {
  it('decode(encode(v)) == v for JSON-like CBOR values', () => {
    fc.assert(
      fc.property(cborValue, (v) => {
        expect(decode(encode(v))).toEqual(v);
      }),
      { numRuns: 3000 },
    );
  });

  it('every valid command opens to itself [ENV-7]', () => {
    fc.assert(
      fc.property(commandArb, (cmd) => {
        const env = encodeCommand(cmd, controller);
        expect(openCommand(env, { site: cmd.site, trust, nowSec: cmd.iat }).cmd).toEqual(cmd);
      }),
      { numRuns: 800 },
    );
  });

  it('every valid ack and state opens to itself [ENV-UP-1]', () => {
    const seed = seedOf('uplink');
    const { publicKey } = createSigner('uplink', seed);
    const signer = (site: string): Signer => ({
      kid: siteKid(site),
      publicKey,
      sign: (m) => nodeEd25519.sign(seed, m),
    });
    const keys = () => publicKey;
    fc.assert(
      fc.property(ackArb, stateArb, (a, s) => {
        expect(openAck(encodeAck(a, signer(a.site)), keys, a.site)).toEqual(a);
        expect(openState(encodeState(s, signer(s.site)), keys, s.site)).toEqual(s);
      }),
      { numRuns: 800 },
    );
  });
});

// ---- totality under bad input (I9) ------------------------------------------------------------

const BASES: Uint8Array[] = [
  ...COMMAND_TYPES.map((t) => encodeCommand(command(t), controller)),
  encodeAck(ack(), siteSigner),
  encodeState(state(), siteSigner),
  encodeTrustRoot(trustDoc({ ver: 2 }), [root1]),
  encodeApproval({ v: 1, stack: 'web', rev: 1, dig: new Uint8Array(32), iat: 1 }, approver1),
];

describe('bad input is harmless: only ProtocolErrors, every run finishes (I9)', () => {
  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), throughAll), { numRuns: 3000 });
  });

  it('random bytes behind a COSE_Sign1 / COSE_Sign head', () => {
    const heads = fc.constantFrom(
      Uint8Array.of(0xd2, 0x84),
      Uint8Array.of(0xd8, 0x62, 0x84),
      Uint8Array.of(0xd2, 0x84, 0x4a),
    );
    fc.assert(
      fc.property(heads, fc.uint8Array({ maxLength: 200 }), (h, b) =>
        throughAll(new Uint8Array([...h, ...b])),
      ),
      {
        numRuns: 3000,
      },
    );
  });

  it('mutated valid envelopes', () => {
    let rejected = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...BASES),
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        (base, ms) => {
          const bad = ms.reduce(mutate, base);
          throughAll(bad);
          if (harmless(() => parseSign1(bad, COMMAND_LIMITS)) !== 'ok') rejected++;
        },
      ),
      { numRuns: 4000 },
    );
    expect(rejected).toBeGreaterThan(2000); // the mutations do reach the parsers' rejection paths
  });

  it('oversized input is too-large whatever it holds [CBOR-3]', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (b) => {
        const big = new Uint8Array(COMMAND_LIMITS.maxBytes + 1);
        big.set(b);
        expect(harmless(() => openCommand(big, ctx))).toBe('too-large');
        expect(harmless(() => decode(big))).toBe('too-large');
      }),
      { numRuns: 200 },
    );
  });
});

describe('signed but malformed payloads are malformed [CBOR-6] [CBOR-7] [CBOR-5]', () => {
  const textKey = (k: string, long: boolean) => {
    const b = new TextEncoder().encode(k);
    return long ? new Uint8Array([0x78, b.length, ...b]) : encode(k);
  };

  it('a duplicated key (also with a non-minimal length head)', () => {
    fc.assert(
      fc.property(commandArb, fc.nat(), fc.boolean(), (cmd, pick, long) => {
        const entries = Object.entries(cmd);
        const [dk, dv] = entries[pick % entries.length]!;
        const parts: Uint8Array[] = [Uint8Array.of(0xa0 | (entries.length + 1))];
        for (const [k, v] of entries) parts.push(encode(k), encode(v));
        parts.push(textKey(dk, long), encode(dv));
        const payload = new Uint8Array(parts.flatMap((p) => [...p]));
        expect(
          harmless(() =>
            openCommand(sign1(payload, controller), { ...ctx, site: cmd.site, nowSec: cmd.iat }),
          ),
        ).toBe('malformed');
      }),
      { numRuns: 500 },
    );
  });

  it('an unknown tag around the payload or a value; a nesting beyond the depth cap', () => {
    fc.assert(
      fc.property(
        commandArb,
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.integer({ min: 17, max: 400 }),
        (cmd, tag, depth) => {
          const c = { ...ctx, site: cmd.site, nowSec: cmd.iat };
          const tagHead = Uint8Array.of(
            0xda,
            tag >>> 24,
            (tag >>> 16) & 0xff,
            (tag >>> 8) & 0xff,
            tag & 0xff,
          );
          const tagged = new Uint8Array([...tagHead, ...encode(cmd)]);
          expect(harmless(() => openCommand(sign1(tagged, controller), c))).toBe('malformed');
          const deep = new Uint8Array([
            ...encode({ ...cmd, body: null }).slice(0, -1),
            ...new Uint8Array(depth).fill(0x81),
            0xf6,
          ]);
          expect(harmless(() => openCommand(sign1(deep, controller), c))).toBe('malformed');
        },
      ),
      { numRuns: 500 },
    );
  });
});

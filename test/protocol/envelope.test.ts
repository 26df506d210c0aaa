import { describe, expect, it } from 'vitest';
import {
  COMMAND_LIMITS,
  COMMAND_TYPES,
  createSigner,
  DEFAULT_MAX_FUTURE_SEC,
  encode,
  encodeAck,
  encodeCommand,
  encodeState,
  envelopeRef,
  naclEd25519,
  nodeEd25519,
  type OpenCommandContext,
  openAck,
  openCommand,
  openState,
  sha256,
  sign1,
  siteFromKid,
  siteKid,
} from '../../protocol/src/index.js';
import {
  ack,
  codeOf,
  command,
  controller,
  heartbeatOnly,
  IAT,
  NOW,
  OTHER_SITE,
  otherSiteSigner,
  SITE,
  seedOf,
  signerOf,
  siteKeys,
  siteSigner,
  state,
  toHexStr,
  trust,
} from './helpers.js';

const ctx: OpenCommandContext = { site: SITE, trust, nowSec: NOW };
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

describe('openCommand accepts [ENV-7]', () => {
  it.each(COMMAND_TYPES)('a valid %s, with both Ed25519 implementations', (type) => {
    const env = encodeCommand(command(type), controller);
    for (const impl of [nodeEd25519, naclEd25519]) {
      const { cmd, kid } = openCommand(env, { ...ctx, impl });
      expect(kid).toBe('ctl-1');
      expect(cmd).toEqual(command(type));
      expect(cmd.id).toBeInstanceOf(Uint8Array);
    }
  });

  it('a key scoped to heartbeat signs heartbeats [TRUST-2]', () => {
    expect(openCommand(encodeCommand(command('heartbeat'), heartbeatOnly), ctx).kid).toBe('hb-1');
  });
});

describe('openCommand rejects, each with its reason code [ENV-7] I6 I9', () => {
  it('bad-signature: a flipped signature bit, a payload byte changed after signing', () => {
    const env = encodeCommand(command(), controller);
    const sigFlip = Uint8Array.from(env);
    sigFlip[sigFlip.length - 10]! ^= 0x40;
    expect(codeOf(() => openCommand(sigFlip, ctx))).toBe('bad-signature');
    const i = Buffer.from(env).indexOf(Buffer.from(SITE)); // same length, still valid CBOR
    const retargeted = Uint8Array.from(env);
    retargeted.set(new TextEncoder().encode(OTHER_SITE), i);
    expect(codeOf(() => openCommand(retargeted, { ...ctx, site: OTHER_SITE }))).toBe('bad-signature');
  });

  it('bad-signature: signed under a trusted kid by another key', () => {
    const forger = createSigner('ctl-1', seedOf('forger'));
    expect(codeOf(() => openCommand(encodeCommand(command(), forger), ctx))).toBe('bad-signature');
  });

  it('bad-signature: the malleated twin (S + L) with either implementation [ENV-SIG-3]', () => {
    const env = encodeCommand(command(), controller);
    const s = env.subarray(env.length - 32);
    let v = 0n;
    for (let i = 31; i >= 0; i--) v = (v << 8n) | BigInt(s[i]!);
    v += L;
    const twin = Uint8Array.from(env);
    for (let i = 0; i < 32; i++, v >>= 8n) twin[env.length - 32 + i] = Number(v & 0xffn);
    expect(toHexStr(twin)).not.toBe(toHexStr(env));
    for (const impl of [nodeEd25519, naclEd25519]) {
      expect(codeOf(() => openCommand(twin, { ...ctx, impl }))).toBe('bad-signature');
    }
  });

  it('unknown-key: kid not in the trust root', () => {
    const stranger = signerOf('ctl-9');
    expect(codeOf(() => openCommand(encodeCommand(command(), stranger), ctx))).toBe('unknown-key');
  });

  it('unknown-key: a root key (roots sign trust documents, never commands)', () => {
    expect(codeOf(() => openCommand(encodeCommand(command(), signerOf('root-1')), ctx))).toBe('unknown-key');
  });

  it('unknown-key: kid present but not allowed this type [TRUST-2]', () => {
    for (const type of COMMAND_TYPES.filter((t) => t !== 'heartbeat')) {
      expect(codeOf(() => openCommand(encodeCommand(command(type), heartbeatOnly), ctx))).toBe('unknown-key');
    }
    expect(codeOf(() => openCommand(encodeCommand(command(), signerOf('appr-1')), ctx))).toBe('unknown-key');
  });

  it('wrong-site: a valid envelope for site A opened as site B [TOP-3]', () => {
    const env = encodeCommand(command('stack.apply'), controller);
    expect(openCommand(env, ctx).cmd.site).toBe(SITE);
    expect(codeOf(() => openCommand(env, { ...ctx, site: OTHER_SITE }))).toBe('wrong-site');
  });

  it('expired: exp at or before trusted time [ORD-6]', () => {
    const env = encodeCommand(command('heartbeat', { exp: NOW }), controller);
    expect(codeOf(() => openCommand(env, ctx))).toBe('expired');
    expect(codeOf(() => openCommand(env, { ...ctx, nowSec: NOW + 86_400 }))).toBe('expired');
    expect(openCommand(env, { ...ctx, nowSec: NOW - 1 }).cmd.exp).toBe(NOW);
  });

  it('not-yet-valid: issued more than 24 h ahead of trusted time [TIME-1]', () => {
    const ahead = encodeCommand(
      command('heartbeat', { iat: NOW + DEFAULT_MAX_FUTURE_SEC + 1, exp: NOW + 2 * 86_400 }),
      controller,
    );
    expect(codeOf(() => openCommand(ahead, ctx))).toBe('not-yet-valid');
    const edge = encodeCommand(
      command('heartbeat', { iat: NOW + DEFAULT_MAX_FUTURE_SEC, exp: NOW + 2 * 86_400 }),
      controller,
    );
    expect(openCommand(edge, ctx).cmd.iat).toBe(NOW + DEFAULT_MAX_FUTURE_SEC);
    expect(codeOf(() => openCommand(edge, { ...ctx, maxFutureSec: 60 }))).toBe('not-yet-valid');
  });

  it('a device clock at 1970 still rejects an expired command once trusted time has moved', () => {
    const env = encodeCommand(command('heartbeat', { iat: 1000, exp: 2000 }), controller);
    expect(openCommand(env, { ...ctx, nowSec: 1500 }).cmd.seq).toBe(7);
    expect(codeOf(() => openCommand(env, { ...ctx, nowSec: IAT }))).toBe('expired');
  });

  it('malformed: a body that breaks its schema, signed by a trusted key', () => {
    const raw = (o: object) => sign1(encode({ ...command('stack.apply'), ...o }), controller);
    expect(codeOf(() => openCommand(raw({ body: { stack: 'web' } }), ctx))).toBe('malformed');
    expect(
      codeOf(() => openCommand(raw({ body: { stack: 'Web!', rev: 1, spec: new Uint8Array(1) } }), ctx)),
    ).toBe('malformed');
    expect(
      codeOf(() => openCommand(raw({ body: { stack: 'web', rev: 1, spec: new Uint8Array(1), x: 1 } }), ctx)),
    ).toBe('malformed');
    expect(codeOf(() => openCommand(raw({ id: new Uint8Array(15) }), ctx))).toBe('malformed');
    expect(codeOf(() => openCommand(raw({ seq: 0, prev: 0 }), ctx))).toBe('malformed');
    expect(codeOf(() => openCommand(raw({ exp: IAT }), ctx))).toBe('malformed'); // exp not after iat
    expect(codeOf(() => openCommand(raw({ prev: 7 }), ctx))).toBe('malformed'); // prev not below seq [ORD-2]
    expect(codeOf(() => openCommand(raw({ extra: true }), ctx))).toBe('malformed');
    expect(codeOf(() => openCommand(sign1(encode([1, 2]), controller), ctx))).toBe('malformed');
    expect(codeOf(() => openCommand(sign1(Uint8Array.of(0xa1, 0x61), controller), ctx))).toBe('malformed');
  });

  it('unknown-type and unsupported-version', () => {
    const raw = (o: object) => sign1(encode({ ...command('heartbeat'), ...o }), controller);
    expect(codeOf(() => openCommand(raw({ type: 'stack.nuke' }), ctx))).toBe('unknown-type');
    expect(codeOf(() => openCommand(raw({ v: 2 }), ctx))).toBe('unsupported-version');
  });

  it('malformed / too-large before any key lookup: structure and size [ENV-6]', () => {
    expect(codeOf(() => openCommand(new Uint8Array(COMMAND_LIMITS.maxBytes + 1), ctx))).toBe('too-large');
    const env = encodeCommand(command(), controller);
    expect(
      codeOf(() => openCommand(env, { ...ctx, limits: { ...COMMAND_LIMITS, maxBytes: env.length - 1 } })),
    ).toBe('too-large');
    expect(codeOf(() => openCommand(env.subarray(0, env.length - 1), ctx))).toBe('malformed');
    expect(codeOf(() => openCommand(new Uint8Array([...env, 0]), ctx))).toBe('malformed');
  });

  it('nothing unauthenticated is decoded: a forged, malformed payload is bad-signature, not malformed [ENV-7]', () => {
    const forger = createSigner('ctl-1', new Uint8Array(32).fill(3));
    const forged = sign1(encode({ v: 99, junk: true }), forger);
    expect(codeOf(() => openCommand(forged, ctx))).toBe('bad-signature');
  });

  it('checks run in the documented order [ENV-7]', () => {
    // Wrong site AND expired AND unscoped key: scope is checked first, then site, then time.
    const all = encodeCommand(command('stack.apply', { exp: NOW - 10, iat: NOW - 20 }), heartbeatOnly);
    expect(codeOf(() => openCommand(all, { ...ctx, site: OTHER_SITE }))).toBe('unknown-key');
    const siteAndTime = encodeCommand(command('heartbeat', { exp: NOW - 10, iat: NOW - 20 }), controller);
    expect(codeOf(() => openCommand(siteAndTime, { ...ctx, site: OTHER_SITE }))).toBe('wrong-site');
    // Version before scope: a v2 command from an unscoped key.
    const v2 = sign1(encode({ ...command('stack.apply'), v: 2 }), heartbeatOnly);
    expect(codeOf(() => openCommand(v2, ctx))).toBe('unsupported-version');
  });

  it('encodeCommand validates before signing', () => {
    expect(
      codeOf(() => encodeCommand(command('heartbeat', { body: { last: -1 } } as never), controller)),
    ).toBe('malformed');
    expect(codeOf(() => encodeCommand(command('heartbeat', { type: 'nope' } as never), controller))).toBe(
      'unknown-type',
    );
    expect(codeOf(() => encodeCommand(command('heartbeat', { site: 'Bad Site' }), controller))).toBe(
      'malformed',
    );
  });
});

describe('acks and state [ENV-UP-1] [TOP-3]', () => {
  it('round-trip with the site key, topic agreeing', () => {
    expect(openAck(encodeAck(ack(), siteSigner), siteKeys, SITE)).toEqual(ack());
    expect(openAck(encodeAck(ack(), siteSigner), siteKeys)).toEqual(ack());
    expect(openState(encodeState(state(), siteSigner), siteKeys, SITE, naclEd25519)).toEqual(state());
    const rejected = ack({
      st: 'rejected',
      rc: 'wrong-site',
      ref: new Uint8Array(8),
      seq: undefined,
      type: undefined,
    });
    delete rejected.seq;
    delete rejected.type;
    expect(openAck(encodeAck(rejected, siteSigner), siteKeys).rc).toBe('wrong-site');
  });

  it('wrong-site: the topic names another site', () => {
    expect(codeOf(() => openAck(encodeAck(ack(), siteSigner), siteKeys, OTHER_SITE))).toBe('wrong-site');
    expect(codeOf(() => openState(encodeState(state(), siteSigner), siteKeys, OTHER_SITE))).toBe(
      'wrong-site',
    );
  });

  it('wrong-site: a site signs a message naming another site', () => {
    const lie = sign1(encode(ack({ site: OTHER_SITE })), siteSigner);
    expect(codeOf(() => openAck(lie, siteKeys, OTHER_SITE))).toBe('wrong-site');
    expect(codeOf(() => openAck(lie, siteKeys))).toBe('wrong-site');
  });

  it('unknown-key: a kid that is not site:<id>, or a site not enrolled', () => {
    expect(codeOf(() => openAck(encodeAck(ack(), controller), siteKeys))).toBe('unknown-key');
    const ghost = signerOf(siteKid('ghost'));
    expect(codeOf(() => openAck(encodeAck(ack({ site: 'ghost' }), ghost), siteKeys))).toBe('unknown-key');
  });

  it('bad-signature: another site key under this site kid', () => {
    const impostor = createSigner(siteKid(SITE), new Uint8Array(32).fill(5));
    expect(codeOf(() => openAck(encodeAck(ack(), impostor), siteKeys))).toBe('bad-signature');
    expect(codeOf(() => openState(encodeState(state(), impostor), siteKeys))).toBe('bad-signature');
    expect(
      codeOf(() =>
        openAck(encodeAck(ack({ site: OTHER_SITE }), otherSiteSigner), () => siteSigner.publicKey),
      ),
    ).toBe('bad-signature');
  });

  it('malformed and unsupported-version payloads, signed by the right key', () => {
    expect(codeOf(() => openAck(sign1(encode({ ...ack(), st: 'done' }), siteSigner), siteKeys))).toBe(
      'malformed',
    );
    expect(codeOf(() => openAck(sign1(encode({ ...ack(), rc: 'oops' }), siteSigner), siteKeys))).toBe(
      'malformed',
    );
    expect(codeOf(() => openAck(sign1(encode({ ...ack(), v: 2 }), siteSigner), siteKeys))).toBe(
      'unsupported-version',
    );
    expect(codeOf(() => openState(sign1(encode({ ...state(), stacks: 'none' }), siteSigner), siteKeys))).toBe(
      'malformed',
    );
    // An ack is not a state, and vice versa.
    expect(codeOf(() => openState(encodeAck(ack(), siteSigner), siteKeys))).toBe('malformed');
  });

  it('too-large above the 64 KiB uplink cap [ENV-6]', () => {
    const big = state({ agent: 'a', stacks: [] });
    const bytes = sign1(encode({ ...big, pad: 'x'.repeat(65 * 1024) }), siteSigner);
    expect(codeOf(() => openState(bytes, siteKeys))).toBe('too-large');
  });

  it('encodeAck / encodeState validate before signing', () => {
    expect(codeOf(() => encodeAck(ack({ useq: -1 }), siteSigner))).toBe('malformed');
    expect(codeOf(() => encodeState(state({ trust: 1.5 }), siteSigner))).toBe('malformed');
  });

  it('siteKid / siteFromKid / envelopeRef [ACK-3]', () => {
    expect(siteKid('plant-01')).toBe('site:plant-01');
    expect(siteFromKid('site:plant-01')).toBe('plant-01');
    expect(siteFromKid('ctl-1')).toBeUndefined();
    const env = encodeCommand(command(), controller);
    expect(envelopeRef(env)).toEqual(sha256(env).subarray(0, 8));
    expect(envelopeRef(env)).toHaveLength(8);
  });
});

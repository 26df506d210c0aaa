import { describe, expect, it } from 'vitest';
import {
  COMMAND_LIMITS,
  createSigner,
  encode,
  encodeTrustRoot,
  naclEd25519,
  openTrustRoot,
  parseSign,
  type Signer,
  signMulti,
  type TrustRoot,
  TrustStore,
} from '../../protocol/src/index.js';
import {
  codeOf,
  controller,
  heartbeatOnly,
  IAT,
  root1,
  root2,
  seedOf,
  signerOf,
  trustDoc,
} from './helpers.js';

const root3 = signerOf('root-3');
const root4 = signerOf('root-4');
const rootsOf = (...s: Signer[]) => s.map((x) => ({ kid: x.kid, pub: x.publicKey }));

const v1 = trustDoc({ roots: rootsOf(root1, root2), thr: 2 });
const v2 = trustDoc({ ver: 2, roots: rootsOf(root3, root4), thr: 2 });

describe('genesis [TRUST-1] [TRUST-3]', () => {
  it('opens a document carrying thr valid signatures of its own roots', () => {
    const doc = openTrustRoot(encodeTrustRoot(v1, [root1, root2]));
    expect(doc).toEqual(v1);
    expect(openTrustRoot(encodeTrustRoot(v1, [root2, root1]), { impl: naclEd25519 })).toEqual(v1);
  });

  it('fewer than thr valid root signatures -> trust-threshold', () => {
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1])))).toBe('trust-threshold');
  });

  it('duplicate signatures from one key count once [TRUST-4]', () => {
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1, root1])))).toBe('trust-threshold');
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1, root1, root1])))).toBe('trust-threshold');
  });

  it('distinct kids with the same public key count once [TRUST-4]', () => {
    const seed = seedOf('twin');
    const a = createSigner('twin-a', seed);
    const b = createSigner('twin-b', seed);
    const doc = trustDoc({ roots: rootsOf(a, b), thr: 2 });
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(doc, [a, b])))).toBe('trust-threshold');
  });

  it('signatures by non-root keys do not count', () => {
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1, controller, root3])))).toBe(
      'trust-threshold',
    );
  });

  it('a signature made under a root kid by another key does not count', () => {
    const impostor = createSigner(root2.kid, seedOf('impostor'));
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1, impostor])))).toBe('trust-threshold');
  });

  it('a tampered signature -> trust-threshold', () => {
    const bytes = encodeTrustRoot(v1, [root1, root2]);
    bytes[bytes.length - 1]! ^= 0x01;
    expect(codeOf(() => openTrustRoot(bytes))).toBe('trust-threshold');
  });
});

describe('rotation N -> N+1 [TRUST-4]', () => {
  it('needs the old AND the new thresholds', () => {
    const both = encodeTrustRoot(v2, [root1, root2, root3, root4]);
    expect(openTrustRoot(both, { current: v1 })).toEqual(v2);
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v2, [root3, root4]), { current: v1 }))).toBe(
      'trust-threshold',
    );
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v2, [root1, root2, root3]), { current: v1 }))).toBe(
      'trust-threshold',
    );
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v2, [root1, root2]), { current: v1 }))).toBe(
      'trust-threshold',
    );
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v2, [root1, root3, root4]), { current: v1 }))).toBe(
      'trust-threshold',
    );
  });

  it('keeping the same roots needs their threshold once', () => {
    const same = trustDoc({ ver: 2, roots: rootsOf(root1, root2), thr: 2 });
    expect(openTrustRoot(encodeTrustRoot(same, [root1, root2]), { current: v1 }).ver).toBe(2);
  });

  it('skipping a version, replaying the current one or going back -> trust-version', () => {
    const all = [root1, root2, root3, root4];
    for (const ver of [3, 1, 100]) {
      const doc = encodeTrustRoot({ ...v2, ver }, all);
      expect(codeOf(() => openTrustRoot(doc, { current: v1 }))).toBe('trust-version');
    }
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v1, [root1, root2]), { current: v2 }))).toBe(
      'trust-version',
    );
  });

  it('walks two steps in order', () => {
    const v3 = trustDoc({ ver: 3, roots: rootsOf(root1), thr: 1 });
    const d2 = openTrustRoot(encodeTrustRoot(v2, [root1, root2, root3, root4]), { current: v1 });
    expect(openTrustRoot(encodeTrustRoot(v3, [root3, root4, root1]), { current: d2 }).ver).toBe(3);
    expect(codeOf(() => openTrustRoot(encodeTrustRoot(v3, [root1, root2]), { current: d2 }))).toBe(
      'trust-threshold',
    );
  });
});

describe('expiry and validation', () => {
  it('an expired document -> expired; judged only when now is given', () => {
    const doc = { ...v1, exp: IAT };
    const bytes = encodeTrustRoot(doc, [root1, root2]);
    expect(codeOf(() => openTrustRoot(bytes, { now: IAT }))).toBe('expired');
    expect(codeOf(() => openTrustRoot(bytes, { now: IAT + 1 }))).toBe('expired');
    expect(openTrustRoot(bytes, { now: IAT - 1 }).exp).toBe(IAT);
    expect(openTrustRoot(bytes).exp).toBe(IAT);
  });

  it.each<[string, Partial<TrustRoot>]>([
    ['threshold above the root count', { thr: 3 }],
    [
      'duplicate kid between roots and keys',
      { keys: [{ kid: root1.kid, pub: root1.publicKey, types: ['heartbeat'] }] },
    ],
    [
      'an unknown key scope',
      { keys: [{ kid: 'k', pub: root1.publicKey, types: ['deploy' as 'heartbeat'] }] },
    ],
    ['a 31-byte public key', { roots: [{ kid: 'r', pub: new Uint8Array(31) }] }],
    ['no roots', { roots: [] }],
    ['version 0', { ver: 0 }],
  ])('refuses to sign a document with %s (malformed)', (_n, over) => {
    expect(codeOf(() => encodeTrustRoot({ ...v1, ...over }, [root1, root2]))).toBe('malformed');
  });

  it('a signed document that breaks the schema -> malformed', () => {
    const bad = signMulti(encode({ ...v1, extra: 1 }), [root1, root2]);
    expect(codeOf(() => openTrustRoot(bad))).toBe('malformed');
    const dup = signMulti(encode({ ...v1, thr: 3 }), [root1, root2]);
    expect(codeOf(() => openTrustRoot(dup))).toBe('malformed');
  });

  it('size cap 16 KiB [ENV-6] and structure', () => {
    expect(codeOf(() => openTrustRoot(new Uint8Array(16 * 1024 + 1)))).toBe('too-large');
    expect(codeOf(() => openTrustRoot(Uint8Array.of(0xd8, 0x62, 0x80)))).toBe('malformed');
    const sign1Shaped = encodeTrustRoot(v1, [root1, root2]);
    sign1Shaped[1] = 0x12; // tag 18 instead of 98
    expect(codeOf(() => openTrustRoot(sign1Shaped))).toBe('malformed');
  });

  it('COSE_Sign carries one signature per root, in order', () => {
    const parts = parseSign(encodeTrustRoot(v1, [root2, root1]), COMMAND_LIMITS);
    expect(parts.signatures.map((s) => s.kid)).toEqual(['root-2', 'root-1']);
  });
});

describe('TrustStore [TRUST-2]', () => {
  const store = new TrustStore(trustDoc({ exp: IAT + 100 }));
  it('looks keys up by kid and scope', () => {
    expect(store.version).toBe(1);
    expect(store.keyFor(controller.kid, 'stack.apply')).toEqual(controller.publicKey);
    expect(store.keyFor(heartbeatOnly.kid, 'heartbeat')).toEqual(heartbeatOnly.publicKey);
    expect(store.keyFor(heartbeatOnly.kid, 'stack.apply')).toBeUndefined();
    expect(store.keyFor('approve-x', 'approve')).toBeUndefined();
    expect(store.anyKey(heartbeatOnly.kid)).toEqual(heartbeatOnly.publicKey);
    expect(store.anyKey(root1.kid)).toBeUndefined(); // root keys never sign commands
    expect(store.anyKey('nobody')).toBeUndefined();
  });
  it('knows when it has expired', () => {
    expect(store.expired(IAT + 99)).toBe(false);
    expect(store.expired(IAT + 100)).toBe(true);
    expect(new TrustStore(trustDoc()).expired(Number.MAX_SAFE_INTEGER)).toBe(false);
  });
  it('validates the document it is given', () => {
    expect(codeOf(() => new TrustStore(trustDoc({ thr: 5 })))).toBe('malformed');
  });
});

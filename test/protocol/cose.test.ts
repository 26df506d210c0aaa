import { describe, expect, it } from 'vitest';
import {
  ALG_EDDSA,
  COMMAND_LIMITS,
  createSigner,
  encode,
  naclEd25519,
  nodeEd25519,
  parseProtected,
  parseSign,
  parseSign1,
  protectedHeader,
  type Signer,
  sign1,
  signMulti,
  sigStructure1,
  sigStructureMulti,
  verifyMultiSignature,
  verifySign1,
} from '../../protocol/src/index.js';
import { codeOf, hex, root1, root2, seedOf, signerOf, toHexStr } from './helpers.js';

const limits = COMMAND_LIMITS;
const payload = encode({ hello: 'world', n: 1 });
const signer = signerOf('ctl-1');

function bstr(b: Uint8Array): Uint8Array {
  const n = b.length;
  const head = n < 24 ? [0x40 | n] : n < 256 ? [0x58, n] : [0x59, n >> 8, n & 0xff];
  return new Uint8Array([...head, ...b]);
}

/** A COSE_Sign1 with arbitrary headers, correctly signed, so only header rules can reject it. */
function rawSign1(prot: Uint8Array, unprot: Uint8Array, s: Signer = signer, body = payload): Uint8Array {
  const sig = s.sign(sigStructure1(prot, body));
  return new Uint8Array([0xd2, 0x84, ...bstr(prot), ...unprot, ...bstr(body), ...bstr(sig)]);
}

describe('COSE_Sign1 [ENV-1] [ENV-3] [ENV-4]', () => {
  it('sign1 writes 18([h{1:-8,4:kid}, {}, payload, sig]) with preferred heads', () => {
    const env = sign1(payload, signer);
    const prot = protectedHeader('ctl-1');
    expect(toHexStr(prot)).toBe('a20127044563746c2d31');
    const sig = env.subarray(env.length - 64);
    const expected = new Uint8Array([0xd2, 0x84, ...bstr(prot), 0xa0, ...bstr(payload), 0x58, 0x40, ...sig]);
    expect(toHexStr(env)).toBe(toHexStr(expected));
  });

  it('the Sig_structure is ["Signature1", protected, h\'\', payload] (RFC 9052 §4.4)', () => {
    const prot = protectedHeader('k');
    const s = sigStructure1(prot, Uint8Array.of(0xa0));
    const text = (t: string) => toHexStr(new TextEncoder().encode(t));
    expect(toHexStr(prot)).toBe('a2012704416b');
    expect(toHexStr(s)).toBe(`846a${text('Signature1')}46${toHexStr(prot)}4041a0`);
    const m = sigStructureMulti(new Uint8Array(0), prot, Uint8Array.of(0xa0));
    expect(toHexStr(m)).toBe(`8569${text('Signature')}4046${toHexStr(prot)}4041a0`);
  });

  it('parses and verifies with both Ed25519 implementations', () => {
    const env = sign1(payload, signer);
    const parts = parseSign1(env, limits);
    expect(parts.kid).toBe('ctl-1');
    expect(toHexStr(parts.payload)).toBe(toHexStr(payload));
    expect(verifySign1(parts, signer.publicKey, nodeEd25519)).toBe(true);
    expect(verifySign1(parts, signer.publicKey, naclEd25519)).toBe(true);
    expect(verifySign1(parts, signerOf('other').publicKey)).toBe(false);
  });

  it('a signer built with tweetnacl produces the same bytes (Ed25519 is deterministic)', () => {
    const a = sign1(payload, createSigner('k1', seedOf('x'), nodeEd25519));
    const b = sign1(payload, createSigner('k1', seedOf('x'), naclEd25519));
    expect(toHexStr(a)).toBe(toHexStr(b));
  });

  it('verification covers the exact payload and protected bytes [ENV-4]', () => {
    const env = sign1(payload, signer);
    const parts = parseSign1(env, limits);
    const flipped = Uint8Array.from(parts.payload);
    flipped[flipped.length - 1]! ^= 1;
    expect(verifySign1({ ...parts, payload: flipped }, signer.publicKey)).toBe(false);
    // Same header meaning, different bytes (kid re-encoded with a 1-byte length head).
    const prot2 = hex('a20127045805 6374 6c2d 31'.replace(/\s/g, ''));
    expect(parseProtected(prot2)).toBe('ctl-1');
    expect(verifySign1({ ...parts, protectedBytes: prot2 }, signer.publicKey)).toBe(false);
  });

  it('rejects malformed kids at signing time', () => {
    for (const kid of ['', 'a b', 'x'.repeat(73), 'é', 'a/b']) {
      expect(codeOf(() => createSigner(kid, seedOf('x')))).toBe('malformed');
    }
    // 72 is the cap: `site:` + the longest site id (63) fits ([ENV-2]).
    expect(createSigner('x'.repeat(72), seedOf('x')).kid).toHaveLength(72);
  });
});

describe('protected header strictness [ENV-2]', () => {
  const kid = bstr(new TextEncoder().encode('ctl-1'));
  const cases: [string, Uint8Array][] = [
    ['extra label 3 (content type)', hex(`a3 01 27 03 00 04 ${toHexStr(kid)}`)],
    ['extra text label', hex(`a3 01 27 04 ${toHexStr(kid)} 61 78 00`)],
    ['missing kid', hex('a1 01 27')],
    ['kid as text, not bytes', hex('a2 01 27 04 65 63746c2d31')],
    ['wrong alg ES256 (-7)', hex(`a2 01 26 04 ${toHexStr(kid)}`)],
    ['alg as text', hex(`a2 01 65 4564445341 04 ${toHexStr(kid)}`)],
    ['missing alg', hex(`a1 04 ${toHexStr(kid)}`)],
    ['kid with a space', hex('a2 01 27 04 43 612062')],
    ['kid not UTF-8', hex('a2 01 27 04 42 c328')],
    ['empty kid', hex('a2 01 27 04 40')],
    ['not a map', hex('82 01 27')],
    ['duplicate alg label', hex(`a3 01 27 01 27 04 ${toHexStr(kid)}`)],
    ['duplicate alg label, non-minimal', hex(`a3 01 27 1801 27 04 ${toHexStr(kid)}`)],
    ['trailing byte', hex(`a2 01 27 04 ${toHexStr(kid)} 00`)],
  ];
  it.each(cases)('%s -> malformed', (_name, prot) => {
    expect(codeOf(() => parseSign1(rawSign1(prot, hex('a0')), limits))).toBe('malformed');
  });

  it('an empty protected header (zero-length bstr) -> malformed', () => {
    expect(codeOf(() => parseSign1(rawSign1(new Uint8Array(0), hex('a0')), limits))).toBe('malformed');
  });

  it('accepts the labels in the other order (meaning, not bytes, is checked)', () => {
    const parts = parseSign1(rawSign1(hex(`a2 04 ${toHexStr(kid)} 01 27`), hex('a0')), limits);
    expect(parts.kid).toBe('ctl-1');
    expect(verifySign1(parts, signer.publicKey)).toBe(true);
  });

  it.each([
    ['kid in unprotected', `a1 04 ${toHexStr(kid)}`],
    ['alg in unprotected', 'a1 01 27'],
    ['unprotected as bytes', '40'],
    ['unprotected as array', '80'],
  ])('non-empty unprotected header: %s -> malformed', (_n, unprot) => {
    expect(codeOf(() => parseSign1(rawSign1(protectedHeader('ctl-1'), hex(unprot)), limits))).toBe(
      'malformed',
    );
  });

  it('alg is EdDSA', () => {
    expect(ALG_EDDSA).toBe(-8);
  });
});

describe('COSE_Sign1 structure', () => {
  const good = sign1(payload, signer);
  it.each([
    ['signature of 63 bytes', () => splice64(good, 63), 'bad-signature'],
    ['signature of 65 bytes', () => splice64(good, 65), 'bad-signature'],
    ['payload as text', () => retype(good, 0x40, 0x60), 'malformed'],
    ['untagged', () => good.subarray(1), 'malformed'],
    ['COSE_Sign tag 98', () => new Uint8Array([0xd8, 0x62, ...good.subarray(1)]), 'malformed'],
    ['trailing byte', () => new Uint8Array([...good, 0]), 'malformed'],
    ['above the size cap', () => good, 'too-large'],
  ])('%s -> %s', (name, make, code) => {
    const lim = name.startsWith('above') ? { ...limits, maxBytes: good.length - 1 } : limits;
    expect(codeOf(() => parseSign1(make(), lim))).toBe(code);
  });
});

function splice64(env: Uint8Array, n: number): Uint8Array {
  const body = env.subarray(0, env.length - 66);
  return new Uint8Array([...body, 0x58, n, ...new Uint8Array(n).fill(7)]);
}

function retype(env: Uint8Array, from: number, to: number): Uint8Array {
  const prot = protectedHeader('ctl-1');
  const at = 2 + 1 + prot.length + 1; // tag, array, bstr head, prot, {}
  const out = Uint8Array.from(env);
  out[at] = (out[at]! & 0x1f) | (to & 0xe0);
  expect(env[at]! & 0xe0).toBe(from);
  return out;
}

describe('COSE_Sign (multi-signer) [ENV-5]', () => {
  it("writes one [prot, {}, sig] per signer over [\"Signature\", h'', prot, h'', payload]", () => {
    const doc = signMulti(payload, [root1, root2]);
    expect(toHexStr(doc.subarray(0, 5))).toBe('d8628440a0'); // 98([h'', {}, ...
    const parts = parseSign(doc, limits);
    expect(parts.bodyProtected.length).toBe(0);
    expect(parts.signatures.map((s) => s.kid)).toEqual(['root-1', 'root-2']);
    expect(verifyMultiSignature(parts, parts.signatures[0]!, root1.publicKey)).toBe(true);
    expect(verifyMultiSignature(parts, parts.signatures[1]!, root2.publicKey, naclEd25519)).toBe(true);
    expect(verifyMultiSignature(parts, parts.signatures[0]!, root2.publicKey)).toBe(false);
    // The signature is over the Sig_structure with the signer's own protected header.
    const sig = parts.signatures[1]!;
    expect(root2.sign(sigStructureMulti(new Uint8Array(0), sig.protectedBytes, payload))).toEqual(
      sig.signature,
    );
  });

  it('needs 1..23 signers', () => {
    expect(codeOf(() => signMulti(payload, []))).toBe('malformed');
    const many = Array.from({ length: 24 }, (_, i) => signerOf(`r${i}`));
    expect(codeOf(() => signMulti(payload, many))).toBe('malformed');
    expect(parseSign(signMulti(payload, many.slice(0, 23)), limits).signatures).toHaveLength(23);
  });

  it.each([
    [
      'non-empty body protected header',
      (d: Uint8Array) => new Uint8Array([0xd8, 0x62, 0x84, 0x41, 0xa0, ...d.subarray(4)]),
    ],
    ['no signatures', (d: Uint8Array) => new Uint8Array([...d.subarray(0, bodyEnd(d)), 0x80])],
    [
      'a signature that is not [p, u, sig]',
      (d: Uint8Array) => new Uint8Array([...d.subarray(0, bodyEnd(d)), 0x81, 0x82, 0x40, 0xa0]),
    ],
    [
      'a signature header with an extra label',
      (d: Uint8Array) => withSigProt(d, hex('a3012704446b6579310300')),
    ],
    ['a COSE_Sign1 tag', (d: Uint8Array) => new Uint8Array([0xd2, ...d.subarray(2)])],
    [
      'a non-empty body unprotected header',
      (d: Uint8Array) => new Uint8Array([...d.subarray(0, 4), 0xa1, 0x03, 0x00, ...d.subarray(5)]),
    ],
    [
      'a non-empty signature unprotected header',
      (d: Uint8Array) => {
        const at = bodyEnd(d) + 2 + bstr(protectedHeader('root-1')).length; // [ [ prot, HERE
        expect(d[at]).toBe(0xa0);
        return new Uint8Array([...d.subarray(0, at), 0xa1, 0x04, 0x41, 0x00, ...d.subarray(at + 1)]);
      },
    ],
  ])('%s -> malformed [ENV-5]', (_n, mutate) => {
    const doc = signMulti(payload, [root1]);
    expect(codeOf(() => parseSign(mutate(doc), limits))).toBe('malformed');
  });
});

/** Offset just past the payload of a COSE_Sign made by signMulti. */
function bodyEnd(doc: Uint8Array): number {
  const end = 3 + 1 + 1 + bstr(payload).length; // 98([h'', {}, payload, ...
  expect(doc[end]! >> 5).toBe(4); // the signatures array starts here
  return end;
}

function withSigProt(doc: Uint8Array, prot: Uint8Array): Uint8Array {
  const sig = new Uint8Array(64);
  return new Uint8Array([
    ...doc.subarray(0, bodyEnd(doc)),
    0x81,
    0x83,
    ...bstr(prot),
    0xa0,
    0x58,
    0x40,
    ...sig,
  ]);
}

import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ed25519,
  generateKeyPair,
  isCanonicalS,
  KEY_CACHE_MAX,
  naclEd25519,
  nodeEd25519,
  privateKeyFromPem,
  privateKeyObject,
  privateKeyToPem,
  publicKeyCacheSize,
  publicKeyFromPem,
  publicKeyObject,
  publicKeyToPem,
} from '../../protocol/src/index.js';
import { codeOf, hex, seedOf, toHexStr } from './helpers.js';

interface Vector {
  name: string;
  secret: string;
  public: string;
  message: string;
  signature: string;
}
const fixtures = JSON.parse(
  readFileSync(new URL('../fixtures/protocol/ed25519-vectors.json', import.meta.url), 'utf8'),
) as { rfc8032: Vector[]; sBound: { public: string; justUnder: Vector; justAbove: Vector } };

const IMPLS = [nodeEd25519, naclEd25519] as const;
/** L = 2^252 + 27742317777372353535851937790883648493, the order of the base point. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function leToBig(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}
function bigToLe(v: bigint, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++, v >>= 8n) out[i] = Number(v & 0xffn);
  if (v !== 0n) throw new Error('does not fit');
  return out;
}
/** The malleated twin of a signature: same R, S + L (still < 2^256). */
function malleate(sig: Uint8Array): Uint8Array {
  const s = leToBig(sig.subarray(32));
  return new Uint8Array([...sig.subarray(0, 32), ...bigToLe(s + L, 32)]);
}

describe('RFC 8032 §7.1 test vectors, both implementations', () => {
  it('the SHA(abc) message is SHA-512("abc")', () => {
    const v = fixtures.rfc8032.find((x) => x.name === 'TEST SHA(abc)')!;
    expect(createHash('sha512').update('abc').digest('hex')).toBe(v.message);
    expect(fixtures.rfc8032.find((x) => x.name === 'TEST 1024')!.message.length).toBe(1023 * 2);
  });

  for (const impl of IMPLS) {
    it.each(fixtures.rfc8032.map((v) => [v.name, v] as const))(`${impl.name}: %s`, (_n, v) => {
      const seed = hex(v.secret);
      const msg = hex(v.message);
      expect(toHexStr(impl.publicKey(seed))).toBe(v.public);
      expect(toHexStr(impl.sign(seed, msg))).toBe(v.signature);
      expect(impl.verify(hex(v.public), msg, hex(v.signature))).toBe(true);
      const bad = hex(v.signature);
      bad[0]! ^= 1;
      expect(impl.verify(hex(v.public), msg, bad)).toBe(false);
      expect(impl.verify(hex(v.public), new Uint8Array([...msg, 0]), hex(v.signature))).toBe(false);
    });
  }
});

describe('cross-check node:crypto <-> tweetnacl (ADR 0002)', () => {
  // tweetnacl is ~80x slower than node:crypto: keys are random per message one way, and ten
  // tweetnacl key pairs are reused the other way, so the 400 tweetnacl operations take a few seconds.
  it('200 random messages signed with node:crypto verify with tweetnacl', () => {
    for (let i = 0; i < 200; i++) {
      const seed = new Uint8Array(randomBytes(32));
      const msg = new Uint8Array(randomBytes(i * 7));
      const sig = nodeEd25519.sign(seed, msg);
      const pub = nodeEd25519.publicKey(seed);
      expect(naclEd25519.verify(pub, msg, sig)).toBe(true);
    }
  });

  it('200 random messages signed with tweetnacl verify with node:crypto, byte-identical signatures', () => {
    const pairs = Array.from({ length: 10 }, () =>
      nacl.sign.keyPair.fromSeed(new Uint8Array(randomBytes(32))),
    );
    for (const kp of pairs) expect(nodeEd25519.publicKey(kp.secretKey.subarray(0, 32))).toEqual(kp.publicKey);
    for (let i = 0; i < 200; i++) {
      const kp = pairs[i % pairs.length]!;
      const msg = new Uint8Array(randomBytes(i * 7));
      const sig = nacl.sign.detached(msg, kp.secretKey);
      expect(nodeEd25519.verify(kp.publicKey, msg, sig)).toBe(true);
      expect(toHexStr(nodeEd25519.sign(kp.secretKey.subarray(0, 32), msg))).toBe(toHexStr(sig));
    }
  });

  it('the default implementation is node:crypto where the runtime has Ed25519', () => {
    expect(ed25519).toBe(nodeEd25519);
  });
});

describe('non-canonical signatures [ENV-SIG-3]', () => {
  const seed = seedOf('malleate');
  const pub = nodeEd25519.publicKey(seed);
  const msgs = ['', 'heartbeat', 'x'.repeat(1000)].map((s) => new TextEncoder().encode(s));

  it('S + L is rejected by both wrappers, though raw tweetnacl accepts it', () => {
    for (const msg of msgs) {
      const sig = nodeEd25519.sign(seed, msg);
      const twin = malleate(sig);
      expect(toHexStr(twin)).not.toBe(toHexStr(sig));
      expect(isCanonicalS(twin)).toBe(false);
      // This is why the wrapper exists: tweetnacl alone treats S + L as S.
      expect(nacl.sign.detached.verify(msg, twin, pub)).toBe(true);
      expect(naclEd25519.verify(pub, msg, twin)).toBe(false);
      expect(nodeEd25519.verify(pub, msg, twin)).toBe(false);
    }
  });

  it('BoringSSL bound vectors: S just under L verifies, S just above is rejected', () => {
    const { justUnder, justAbove } = fixtures.sBound;
    const pub = hex(fixtures.sBound.public);
    for (const impl of IMPLS) {
      expect(impl.verify(pub, hex(justUnder.message), hex(justUnder.signature))).toBe(true);
      expect(impl.verify(pub, hex(justAbove.message), hex(justAbove.signature))).toBe(false);
    }
    expect(nacl.sign.detached.verify(hex(justAbove.message), hex(justAbove.signature), pub)).toBe(true);
  });

  it('isCanonicalS at the boundary', () => {
    const sigWith = (s: bigint) => new Uint8Array([...new Uint8Array(32), ...bigToLe(s, 32)]);
    expect(isCanonicalS(sigWith(0n))).toBe(true);
    expect(isCanonicalS(sigWith(L - 1n))).toBe(true);
    expect(isCanonicalS(sigWith(L))).toBe(false);
    expect(isCanonicalS(sigWith(L + 1n))).toBe(false);
    expect(isCanonicalS(sigWith(2n ** 256n - 1n))).toBe(false);
    expect(isCanonicalS(new Uint8Array(63))).toBe(false);
  });

  it('wrong lengths and garbage keys verify false, never throw', () => {
    const msg = Uint8Array.of(1);
    const sig = nodeEd25519.sign(seed, msg);
    for (const impl of IMPLS) {
      expect(impl.verify(pub.subarray(0, 31), msg, sig)).toBe(false);
      expect(impl.verify(pub, msg, sig.subarray(0, 63))).toBe(false);
      expect(impl.verify(pub, msg, new Uint8Array([...sig, 0]))).toBe(false);
      expect(impl.verify(new Uint8Array(32).fill(0xff), msg, sig)).toBe(false);
      expect(impl.verify(new Uint8Array(32), msg, new Uint8Array(64))).toBe(false);
    }
  });
});

describe('keys and PEM', () => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-ed25519-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('PKCS#8 / SPKI PEM round trip', () => {
    const seed = seedOf('pem');
    const pem = privateKeyToPem(seed);
    expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const kp = privateKeyFromPem(pem);
    expect(kp.seed).toEqual(seed);
    expect(kp.publicKey).toEqual(nodeEd25519.publicKey(seed));
    const pubPem = publicKeyToPem(kp.publicKey);
    expect(pubPem).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    expect(publicKeyFromPem(pubPem)).toEqual(kp.publicKey);
    expect(publicKeyFromPem(pem)).toEqual(kp.publicKey); // a private key's public half
  });

  it('reads a key written by `openssl genpkey -algorithm ed25519`', () => {
    const file = join(dir, 'k.pem');
    execFileSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', file]);
    const pubPem = execFileSync('openssl', ['pkey', '-in', file, '-pubout'], { encoding: 'utf8' });
    const kp = privateKeyFromPem(readFileSync(file, 'utf8'));
    expect(publicKeyFromPem(pubPem)).toEqual(kp.publicKey);
    const msg = Uint8Array.of(1, 2, 3);
    expect(naclEd25519.verify(kp.publicKey, msg, nodeEd25519.sign(kp.seed, msg))).toBe(true);
  });

  it('rejects other key types and garbage with malformed', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(
      codeOf(() => privateKeyFromPem(ec.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString())),
    ).toBe('malformed');
    expect(
      codeOf(() => publicKeyFromPem(ec.publicKey.export({ format: 'pem', type: 'spki' }).toString())),
    ).toBe('malformed');
    expect(codeOf(() => privateKeyFromPem('not a key'))).toBe('malformed');
    expect(
      codeOf(() => publicKeyFromPem('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n')),
    ).toBe('malformed');
    expect(codeOf(() => privateKeyObject(new Uint8Array(31)))).toBe('malformed');
    expect(codeOf(() => publicKeyObject(new Uint8Array(33)))).toBe('malformed');
  });

  it('generateKeyPair returns a matching seed and public key', () => {
    const kp = generateKeyPair();
    expect(kp.seed).toHaveLength(32);
    expect(nodeEd25519.publicKey(kp.seed)).toEqual(kp.publicKey);
    expect(generateKeyPair().seed).not.toEqual(kp.seed);
  });
});

describe('public key cache', () => {
  it('holds a whole fleet of uplink keys (more than 4,096) and every key still verifies', () => {
    const message = new TextEncoder().encode('ack');
    const n = 5_000;
    const before = publicKeyCacheSize();
    const signed = Array.from({ length: n }, () => {
      const kp = generateKeyPair();
      return { pub: kp.publicKey, sig: nodeEd25519.sign(kp.seed, message) };
    });
    for (const s of signed) expect(nodeEd25519.verify(s.pub, message, s.sig)).toBe(true);
    expect(publicKeyCacheSize()).toBeGreaterThanOrEqual(Math.min(before + n, KEY_CACHE_MAX));
    expect(publicKeyCacheSize()).toBeLessThanOrEqual(KEY_CACHE_MAX);
    // A second pass hits the cache: verdicts unchanged, a forged signature still fails.
    for (const s of signed.slice(0, 50)) expect(nodeEd25519.verify(s.pub, message, s.sig)).toBe(true);
    const forged = new Uint8Array(signed[0]!.sig);
    forged[0] = forged[0]! ^ 1;
    expect(nodeEd25519.verify(signed[0]!.pub, message, forged)).toBe(false);
  });
});

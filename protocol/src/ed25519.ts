/**
 * Ed25519 (RFC 8032) with two independent implementations (ADR 0002):
 *  - node:crypto (OpenSSL) on the hot path: ~80x faster than tweetnacl here;
 *  - tweetnacl as the independent cross-check in tests and the fallback where the runtime lacks Ed25519.
 * Both are wrapped so that a non-canonical signature (S >= L) is rejected whichever verifies
 * (SPEC [ENV-SIG-3]): tweetnacl alone accepts S + L, which would make signatures malleable.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign as nodeSign,
  verify as nodeVerify,
} from 'node:crypto';
import { createRequire } from 'node:module';
import type naclType from 'tweetnacl';
import { ProtocolError } from './reasons.js';

export interface Ed25519Impl {
  readonly name: 'node' | 'tweetnacl';
  /** `seed` is the 32-byte private key of RFC 8032. */
  sign(seed: Uint8Array, message: Uint8Array): Uint8Array;
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
  publicKey(seed: Uint8Array): Uint8Array;
}

const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

// L = 2^252 + 27742317777372353535851937790883648493, little-endian as in signatures.
const L = Uint8Array.from([
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
]);

/** True when the S half of a 64-byte signature is fully reduced (S < L). */
export function isCanonicalS(signature: Uint8Array): boolean {
  if (signature.length !== 64) return false;
  for (let i = 31; i >= 0; i--) {
    const s = signature[32 + i]!;
    const l = L[i]!;
    if (s < l) return true;
    if (s > l) return false;
  }
  return false; // S == L
}

function checkLengths(publicKey: Uint8Array, signature: Uint8Array): boolean {
  return publicKey.length === 32 && signature.length === 64 && isCanonicalS(signature);
}

const privCache = new Map<string, KeyObject>();
const pubCache = new Map<string, KeyObject>();
/**
 * Key objects by raw key, least recently used evicted. The controller verifies every site's uplink
 * key, so the cache must hold a whole fleet: with 10,000 sites and a cache cleared at 4,096 entries,
 * rebuilding key objects was 15% of the controller's busy time during a rollout. An agent holds a
 * handful of keys, so the bound costs it nothing.
 */
export const KEY_CACHE_MAX = 65_536;

function cached(cache: Map<string, KeyObject>, raw: Uint8Array, make: () => KeyObject): KeyObject {
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1');
  let k = cache.get(id);
  if (k) {
    // Map keeps insertion order: move a hit to the back so the front is the least recently used.
    cache.delete(id);
    cache.set(id, k);
    return k;
  }
  if (cache.size >= KEY_CACHE_MAX) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
  k = make();
  cache.set(id, k);
  return k;
}

/** Number of cached public key objects (for tests). */
export function publicKeyCacheSize(): number {
  return pubCache.size;
}

export function privateKeyObject(seed: Uint8Array): KeyObject {
  if (seed.length !== 32) throw new ProtocolError('malformed', 'Ed25519 private key must be 32 bytes');
  return cached(privCache, seed, () =>
    createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' }),
  );
}

export function publicKeyObject(pub: Uint8Array): KeyObject {
  if (pub.length !== 32) throw new ProtocolError('malformed', 'Ed25519 public key must be 32 bytes');
  return cached(pubCache, pub, () =>
    createPublicKey({ key: Buffer.concat([SPKI_PREFIX, pub]), format: 'der', type: 'spki' }),
  );
}

export const nodeEd25519: Ed25519Impl = {
  name: 'node',
  sign(seed, message) {
    return new Uint8Array(nodeSign(null, message, privateKeyObject(seed)));
  },
  verify(publicKey, message, signature) {
    if (!checkLengths(publicKey, signature)) return false;
    try {
      return nodeVerify(null, message, publicKeyObject(publicKey), signature);
    } catch {
      return false;
    }
  },
  publicKey(seed) {
    const der = createPublicKey(privateKeyObject(seed)).export({ format: 'der', type: 'spki' });
    return new Uint8Array(der.subarray(SPKI_PREFIX.length));
  },
};

// tweetnacl is loaded on first use only: with node:crypto present the agent never needs it, and
// loading it costs ~5 MB RSS on a device budgeted at 50 MB (docs/adr/0005-agent-memory.md).
let naclModule: typeof naclType | undefined;
function nacl(): typeof naclType {
  naclModule ??= createRequire(import.meta.url)('tweetnacl') as typeof naclType;
  return naclModule;
}

export const naclEd25519: Ed25519Impl = {
  name: 'tweetnacl',
  sign(seed, message) {
    const n = nacl();
    return n.sign.detached(message, n.sign.keyPair.fromSeed(seed).secretKey);
  },
  verify(publicKey, message, signature) {
    if (!checkLengths(publicKey, signature)) return false;
    return nacl().sign.detached.verify(message, signature, publicKey);
  },
  publicKey(seed) {
    return nacl().sign.keyPair.fromSeed(seed).publicKey;
  },
};

function runtimeHasEd25519(): boolean {
  try {
    const seed = new Uint8Array(32);
    const sig = nodeEd25519.sign(seed, new Uint8Array(1));
    return nodeEd25519.verify(nodeEd25519.publicKey(seed), new Uint8Array(1), sig);
  } catch {
    return false;
  }
}

/** The implementation used by default: node:crypto when the runtime has Ed25519, tweetnacl otherwise. */
export const ed25519: Ed25519Impl = runtimeHasEd25519() ? nodeEd25519 : naclEd25519;

export interface KeyPair {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  if (ed25519.name === 'node') {
    const { privateKey } = generateKeyPairSync('ed25519');
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const seed = new Uint8Array(der.subarray(der.length - 32));
    return { seed, publicKey: nodeEd25519.publicKey(seed) };
  }
  const kp = nacl().sign.keyPair();
  return { seed: kp.secretKey.slice(0, 32), publicKey: kp.publicKey };
}

/** PKCS#8 PEM of an Ed25519 private key, as openssl and node:crypto write it. */
export function privateKeyToPem(seed: Uint8Array): string {
  return privateKeyObject(seed).export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** SPKI PEM of an Ed25519 public key. */
export function publicKeyToPem(pub: Uint8Array): string {
  return publicKeyObject(pub).export({ format: 'pem', type: 'spki' }).toString();
}

/** Reads a PKCS#8 PEM (or DER) Ed25519 private key. */
export function privateKeyFromPem(pem: string | Uint8Array): KeyPair {
  let key: KeyObject;
  try {
    key =
      typeof pem === 'string'
        ? createPrivateKey(pem)
        : createPrivateKey({ key: Buffer.from(pem), format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw new ProtocolError('malformed', `not a private key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ProtocolError('malformed', 'private key is not Ed25519');
  const der = key.export({ format: 'der', type: 'pkcs8' });
  const seed = new Uint8Array(der.subarray(der.length - 32));
  return { seed, publicKey: nodeEd25519.publicKey(seed) };
}

/** Reads an SPKI PEM Ed25519 public key (a private key PEM is accepted too, and its public half used). */
export function publicKeyFromPem(pem: string): Uint8Array {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new ProtocolError('malformed', `not a public key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new ProtocolError('malformed', 'public key is not Ed25519');
  const der = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(SPKI_PREFIX.length));
}

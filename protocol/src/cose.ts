/**
 * COSE (RFC 9052) for Outpost: COSE_Sign1 (tag 18) for every command, ack and state message, and
 * COSE_Sign (tag 98) for multi-signer documents (the trust root). Alg is always EdDSA (-8) and the
 * `kid` is always in the protected header (SPEC [ENV-1]..[ENV-6], ADR 0001).
 *
 * The structures and the Sig_structure are written by hand with preferred (shortest) CBOR heads, so
 * the bytes are exactly what RFC 9052 §4.4 prescribes and any COSE library reproduces them. Parsing
 * returns the exact received byte ranges: signatures are verified over them, never over a re-encoding.
 */
import { decodeMaps, type ItemSpan, type ScanLimits, scanTaggedArray } from './cbor.js';
import { type Ed25519Impl, ed25519 } from './ed25519.js';
import { ProtocolError } from './reasons.js';

export const COSE_SIGN1_TAG = 18;
export const COSE_SIGN_TAG = 98;
export const ALG_EDDSA = -8;
const HDR_ALG = 1;
const HDR_KID = 4;

export const KID_PATTERN = /^[A-Za-z0-9._:-]{1,72}$/;

export interface Signer {
  readonly kid: string;
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

export function createSigner(kid: string, seed: Uint8Array, impl: Ed25519Impl = ed25519): Signer {
  if (!KID_PATTERN.test(kid)) throw new ProtocolError('malformed', `invalid kid ${JSON.stringify(kid)}`);
  const publicKey = impl.publicKey(seed);
  return { kid, publicKey, sign: (m) => impl.sign(seed, m) };
}

// ---- minimal CBOR writer for the fixed COSE shapes -------------------------------------------

function head(major: number, n: number): Uint8Array {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  return Uint8Array.of(m | 26, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

function concat(parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const bstr = (b: Uint8Array): Uint8Array[] => [head(2, b.length), b];
const tstr = (s: string): Uint8Array[] => {
  const b = new TextEncoder().encode(s);
  return [head(3, b.length), b];
};
const EMPTY = new Uint8Array(0);
const EMPTY_MAP = Uint8Array.of(0xa0);

/** The protected header map {1: -8, 4: kid} in preferred serialisation. */
export function protectedHeader(kid: string): Uint8Array {
  const k = new TextEncoder().encode(kid);
  return concat([Uint8Array.of(0xa2, HDR_ALG, 0x20 | (-1 - ALG_EDDSA)), Uint8Array.of(HDR_KID), ...bstr(k)]);
}

/** Sig_structure for COSE_Sign1 (RFC 9052 §4.4), external_aad empty. */
export function sigStructure1(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return concat([
    Uint8Array.of(0x84),
    ...tstr('Signature1'),
    ...bstr(protectedBytes),
    ...bstr(EMPTY),
    ...bstr(payload),
  ]);
}

/** Sig_structure for one signer of a COSE_Sign (RFC 9052 §4.4), external_aad empty. */
export function sigStructureMulti(
  bodyProtected: Uint8Array,
  signProtected: Uint8Array,
  payload: Uint8Array,
): Uint8Array {
  return concat([
    Uint8Array.of(0x85),
    ...tstr('Signature'),
    ...bstr(bodyProtected),
    ...bstr(signProtected),
    ...bstr(EMPTY),
    ...bstr(payload),
  ]);
}

/** Builds a COSE_Sign1 over `payload` (already-encoded CBOR bytes). */
export function sign1(payload: Uint8Array, signer: Signer): Uint8Array {
  const prot = protectedHeader(signer.kid);
  const sig = signer.sign(sigStructure1(prot, payload));
  return concat([Uint8Array.of(0xd2, 0x84), ...bstr(prot), EMPTY_MAP, ...bstr(payload), ...bstr(sig)]);
}

/** Builds a COSE_Sign with one signature per signer (empty body protected header). */
export function signMulti(payload: Uint8Array, signers: readonly Signer[]): Uint8Array {
  if (signers.length === 0 || signers.length > 23) throw new ProtocolError('malformed', 'need 1..23 signers');
  const sigs: Uint8Array[] = [head(4, signers.length)];
  for (const s of signers) {
    const prot = protectedHeader(s.kid);
    const sig = s.sign(sigStructureMulti(EMPTY, prot, payload));
    sigs.push(Uint8Array.of(0x83), ...bstr(prot), EMPTY_MAP, ...bstr(sig));
  }
  return concat([
    Uint8Array.of(0xd8, COSE_SIGN_TAG, 0x84),
    ...bstr(EMPTY),
    EMPTY_MAP,
    ...bstr(payload),
    ...sigs,
  ]);
}

// ---- parsing ------------------------------------------------------------------------------------

function bstrAt(buf: Uint8Array, span: ItemSpan, what: string): Uint8Array {
  const ib = buf[span.start]!;
  if (ib >> 5 !== 2) throw new ProtocolError('malformed', `COSE ${what} is not a byte string`);
  const ai = ib & 0x1f;
  const hl = ai < 24 ? 1 : ai === 24 ? 2 : ai === 25 ? 3 : ai === 26 ? 5 : 9;
  return buf.subarray(span.start + hl, span.end);
}

function isMapAt(buf: Uint8Array, span: ItemSpan): boolean {
  return buf[span.start]! >> 5 === 5;
}

/** Decodes and checks a protected header; returns the kid. Only alg and kid are allowed ([ENV-2]). */
export function parseProtected(bytes: Uint8Array): string {
  const hdr = decodeMaps(bytes, { maxBytes: 256, maxDepth: 2, maxItems: 16 });
  if (!(hdr instanceof Map)) throw new ProtocolError('malformed', 'protected header is not a map');
  for (const label of hdr.keys()) {
    if (label !== HDR_ALG && label !== HDR_KID) {
      throw new ProtocolError('malformed', `unsupported protected header label ${String(label)}`);
    }
  }
  if (hdr.get(HDR_ALG) !== ALG_EDDSA) throw new ProtocolError('malformed', 'alg is not EdDSA (-8)');
  const kidBytes = hdr.get(HDR_KID);
  if (!(kidBytes instanceof Uint8Array))
    throw new ProtocolError('malformed', 'kid missing from protected header');
  let kid: string;
  try {
    kid = new TextDecoder('utf-8', { fatal: true }).decode(kidBytes);
  } catch {
    throw new ProtocolError('malformed', 'kid is not UTF-8');
  }
  if (!KID_PATTERN.test(kid)) throw new ProtocolError('malformed', 'kid has invalid characters');
  return kid;
}

export interface Sign1Parts {
  readonly kid: string;
  readonly protectedBytes: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

/** Parses the structure of a COSE_Sign1 (strictly) without verifying it. */
export function parseSign1(buf: Uint8Array, limits: ScanLimits): Sign1Parts {
  const spans = scanTaggedArray(buf, COSE_SIGN1_TAG, 4, limits);
  const protectedBytes = bstrAt(buf, spans[0]!, 'protected header');
  if (!isMapAt(buf, spans[1]!)) throw new ProtocolError('malformed', 'COSE unprotected header is not a map');
  if (spans[1]!.end - spans[1]!.start !== 1) {
    throw new ProtocolError('malformed', 'COSE unprotected header must be empty');
  }
  const payload = bstrAt(buf, spans[2]!, 'payload');
  const signature = bstrAt(buf, spans[3]!, 'signature');
  if (signature.length !== 64) throw new ProtocolError('bad-signature', 'signature is not 64 bytes');
  return { kid: parseProtected(protectedBytes), protectedBytes, payload, signature };
}

export function verifySign1(parts: Sign1Parts, publicKey: Uint8Array, impl: Ed25519Impl = ed25519): boolean {
  return impl.verify(publicKey, sigStructure1(parts.protectedBytes, parts.payload), parts.signature);
}

export interface MultiSignature {
  readonly kid: string;
  readonly protectedBytes: Uint8Array;
  readonly signature: Uint8Array;
}

export interface SignParts {
  readonly bodyProtected: Uint8Array;
  readonly payload: Uint8Array;
  readonly signatures: readonly MultiSignature[];
}

/** Parses the structure of a COSE_Sign (strictly) without verifying it. */
export function parseSign(buf: Uint8Array, limits: ScanLimits): SignParts {
  const spans = scanTaggedArray(buf, COSE_SIGN_TAG, 4, limits);
  const bodyProtected = bstrAt(buf, spans[0]!, 'protected header');
  if (bodyProtected.length !== 0)
    throw new ProtocolError('malformed', 'COSE_Sign body protected header must be empty');
  if (!isMapAt(buf, spans[1]!)) throw new ProtocolError('malformed', 'COSE unprotected header is not a map');
  if (spans[1]!.end - spans[1]!.start !== 1) {
    throw new ProtocolError('malformed', 'COSE unprotected header must be empty');
  }
  const payload = bstrAt(buf, spans[2]!, 'payload');
  const arr = decodeMaps(buf.subarray(spans[3]!.start, spans[3]!.end), { ...limits, maxDepth: 3 });
  if (!Array.isArray(arr) || arr.length === 0)
    throw new ProtocolError('malformed', 'COSE_Sign has no signatures');
  const signatures: MultiSignature[] = arr.map((s: unknown) => {
    if (!Array.isArray(s) || s.length !== 3)
      throw new ProtocolError('malformed', 'COSE_Signature is not [p, u, sig]');
    const [p, u, sig] = s as [unknown, unknown, unknown];
    if (!(p instanceof Uint8Array) || !(u instanceof Map) || !(sig instanceof Uint8Array)) {
      throw new ProtocolError('malformed', 'COSE_Signature has wrong member types');
    }
    if (u.size !== 0) throw new ProtocolError('malformed', 'COSE_Signature unprotected header must be empty');
    if (sig.length !== 64) throw new ProtocolError('bad-signature', 'signature is not 64 bytes');
    return { kid: parseProtected(p), protectedBytes: p, signature: sig };
  });
  return { bodyProtected, payload, signatures };
}

export function verifyMultiSignature(
  parts: SignParts,
  sig: MultiSignature,
  publicKey: Uint8Array,
  impl: Ed25519Impl = ed25519,
): boolean {
  return impl.verify(
    publicKey,
    sigStructureMulti(parts.bodyProtected, sig.protectedBytes, parts.payload),
    sig.signature,
  );
}

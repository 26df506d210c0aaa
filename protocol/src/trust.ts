/**
 * Trust root (SPEC [TRUST-1]..[TRUST-7]). Offline root keys (k-of-n) sign a versioned document
 * (COSE_Sign) that lists the online signing keys and the command types each may sign. Rotation walks
 * versions N -> N+1, each document signed by the old AND the new root thresholds.
 */
import { decode, encode, type ScanLimits } from './cbor.js';
import { parseSign, type Signer, signMulti, verifyMultiSignature } from './cose.js';
import { type Ed25519Impl, ed25519 } from './ed25519.js';
import { ProtocolError } from './reasons.js';
import { type CommandType, check, type KeyScope, type TrustRoot, TrustRootSchema } from './schemas.js';

const TRUST_LIMITS: ScanLimits = { maxBytes: 16 * 1024, maxDepth: 8, maxItems: 2000 };

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function validate(doc: TrustRoot): TrustRoot {
  check(TrustRootSchema, doc, 'trust root');
  if (doc.thr > doc.roots.length)
    throw new ProtocolError('malformed', 'trust root threshold exceeds root count');
  const kids = new Set<string>();
  for (const k of [...doc.roots, ...doc.keys]) {
    if (kids.has(k.kid)) throw new ProtocolError('malformed', `duplicate kid ${k.kid} in trust root`);
    kids.add(k.kid);
  }
  return doc;
}

/** Signs a trust-root document with the given root keys. */
export function encodeTrustRoot(doc: TrustRoot, rootSigners: readonly Signer[]): Uint8Array {
  validate(doc);
  return signMulti(encode(doc), rootSigners);
}

/** Counts distinct kids among `roots` whose signatures over the document verify. */
function countValid(
  parts: ReturnType<typeof parseSign>,
  roots: TrustRoot['roots'],
  impl: Ed25519Impl,
): number {
  const ok = new Set<string>();
  for (const sig of parts.signatures) {
    const root = roots.find((r) => r.kid === sig.kid);
    if (!root || ok.has(root.kid)) continue;
    // Two kids with the same public key must not count twice.
    if ([...ok].some((kid) => sameBytes(roots.find((r) => r.kid === kid)!.pub, root.pub))) continue;
    if (verifyMultiSignature(parts, sig, root.pub, impl)) ok.add(root.kid);
  }
  return ok.size;
}

export interface OpenTrustOptions {
  /** The trust root currently pinned; omit only when provisioning (genesis, self-signed). */
  readonly current?: TrustRoot;
  /** Trusted time in seconds, for expiry. */
  readonly now?: number;
  readonly impl?: Ed25519Impl;
}

/**
 * Verifies and decodes a trust-root document.
 * - Genesis (no `current`): must carry `thr` valid signatures of its own roots.
 * - Rotation: `ver` must be exactly current.ver + 1, and it needs `current.thr` valid signatures
 *   from the current roots and `thr` from its own roots ([TRUST-4]).
 */
export function openTrustRoot(bytes: Uint8Array, opts: OpenTrustOptions = {}): TrustRoot {
  const impl = opts.impl ?? ed25519;
  const parts = parseSign(bytes, TRUST_LIMITS);
  const doc = validate(decode(parts.payload, TRUST_LIMITS) as TrustRoot);
  if (opts.current && doc.ver !== opts.current.ver + 1) {
    throw new ProtocolError(
      'trust-version',
      `trust root version ${doc.ver} does not follow ${opts.current.ver}`,
    );
  }
  if (countValid(parts, doc.roots, impl) < doc.thr) {
    throw new ProtocolError('trust-threshold', `fewer than ${doc.thr} valid signatures of the new roots`);
  }
  if (opts.current && countValid(parts, opts.current.roots, impl) < opts.current.thr) {
    throw new ProtocolError(
      'trust-threshold',
      `fewer than ${opts.current.thr} valid signatures of the current roots`,
    );
  }
  if (doc.exp !== undefined && opts.now !== undefined && doc.exp <= opts.now) {
    throw new ProtocolError('expired', `trust root version ${doc.ver} expired`);
  }
  return doc;
}

/** Lookup of online keys by kid and scope in a verified trust root. */
export class TrustStore {
  readonly root: TrustRoot;
  private readonly byKid: Map<string, TrustRoot['keys'][number]>;

  constructor(root: TrustRoot) {
    this.root = validate(root);
    this.byKid = new Map(root.keys.map((k) => [k.kid, k]));
  }

  get version(): number {
    return this.root.ver;
  }

  /** The public key for `kid` if the trust root lets it sign `scope`, else undefined. */
  keyFor(kid: string, scope: CommandType | KeyScope): Uint8Array | undefined {
    const k = this.byKid.get(kid);
    return k && (k.types as readonly string[]).includes(scope) ? k.pub : undefined;
  }

  /** The public key for `kid` whatever its scope (scope is checked after the payload is read). */
  anyKey(kid: string): Uint8Array | undefined {
    return this.byKid.get(kid)?.pub;
  }

  /** True when the trust root has expired at trusted time `now` (seconds). */
  expired(now: number): boolean {
    return this.root.exp !== undefined && this.root.exp <= now;
  }
}

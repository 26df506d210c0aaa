/**
 * Trust-root documents (SPEC [TRUST-1]..[TRUST-4]) as `outpost certs` writes them:
 *
 * - genesis (`init`): N root keys `root-1..N`, threshold K, and two online keys:
 *   `ctl-1` — the controller's signing key, scoped to every command type (stack.*, state.request,
 *   heartbeat, trust.update; a trust.update body carries a root-signed document, so the controller
 *   key cannot change trust on its own), and `approver-1` — scoped to `approve` only, for critical
 *   changes ([SEC-CRIT]), meant to live with a human approver rather than on the controller.
 * - rotation (`rotate-trust`): version N+1, signed by the current root threshold AND the new root
 *   threshold ([TRUST-4]); optionally new root keys, a new threshold and fresh online keys. The new
 *   document is verified against the current one with the protocol's own `openTrustRoot` before a
 *   single file is written.
 */
import { readFile } from 'node:fs/promises';
import {
  COMMAND_TYPES,
  encodeTrustRoot,
  type KeyScope,
  openTrustRoot,
  type Signer,
  type TrustKey,
  type TrustRoot,
} from '../../protocol/src/index.js';
import { CertsError } from './errors.js';
import { ensureDir, exists, writeAtomic } from './files.js';
import { nextKid, readSigner, writeKeyPair } from './keys.js';
import type { CertsLayout } from './layout.js';

export const CONTROLLER_KEY_FAMILY = 'ctl';
export const APPROVER_KEY_FAMILY = 'approver';
export const ROOT_KEY_FAMILY = 'root';
export const CONTROLLER_SCOPES: readonly KeyScope[] = [...COMMAND_TYPES];
export const APPROVER_SCOPES: readonly KeyScope[] = ['approve'];

function nowSec(now?: Date): number {
  return Math.floor((now ?? new Date()).getTime() / 1000);
}

/** Throws `invalid-argument` unless 1 <= threshold <= roots <= 16. */
export function checkThreshold(roots: number, threshold: number): void {
  if (!Number.isInteger(roots) || roots < 1 || roots > 16) {
    throw new CertsError('invalid-argument', `--roots must be 1..16, got ${roots}`);
  }
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > roots) {
    throw new CertsError('invalid-argument', `--threshold must be 1..${roots}, got ${threshold}`);
  }
}

async function newRootKeys(
  l: CertsLayout,
  count: number,
  taken: string[],
  force: boolean,
): Promise<Signer[]> {
  const out: Signer[] = [];
  for (let i = 0; i < count; i++) {
    const kid = nextKid(ROOT_KEY_FAMILY, taken);
    taken.push(kid);
    await writeKeyPair(l.rootKey(kid), l.rootPub(kid), { force });
    out.push(await readSigner(l.rootKey(kid), kid));
  }
  return out;
}

async function newOnlineKey(
  l: CertsLayout,
  family: string,
  scopes: readonly KeyScope[],
  taken: readonly string[],
  force: boolean,
): Promise<TrustKey> {
  const kid = nextKid(family, taken);
  const pair = await writeKeyPair(l.signingKey(kid), l.signingPub(kid), { force });
  return { kid, pub: pair.publicKey, types: [...scopes] };
}

async function writeDoc(l: CertsLayout, ver: number, bytes: Uint8Array): Promise<void> {
  await ensureDir(`${l.dir}/trust`);
  await writeAtomic(l.trustRootVersion(ver), bytes);
  await writeAtomic(l.trustRoot, bytes);
}

export interface GenesisOptions {
  readonly roots?: number;
  readonly threshold?: number;
  readonly force?: boolean;
  readonly now?: Date;
}

export interface TrustResult {
  readonly version: number;
  readonly file: string;
  readonly roots: readonly string[];
  readonly threshold: number;
  readonly keys: readonly { kid: string; types: readonly string[] }[];
}

function summary(l: CertsLayout, doc: TrustRoot): TrustResult {
  return {
    version: doc.ver,
    file: l.trustRootVersion(doc.ver),
    roots: doc.roots.map((r) => r.kid),
    threshold: doc.thr,
    keys: doc.keys.map((k) => ({ kid: k.kid, types: [...k.types] })),
  };
}

/** Root keys, online keys and trust-root v1 (trust-root-v1.cbor and trust-root.cbor). */
export async function createGenesisTrust(l: CertsLayout, opts: GenesisOptions = {}): Promise<TrustResult> {
  const roots = opts.roots ?? 1;
  const thr = opts.threshold ?? 1;
  checkThreshold(roots, thr);
  const force = opts.force ?? false;
  if (!force && (await exists(l.trustRoot))) {
    throw new CertsError('exists', `${l.trustRoot} already exists (use --force to replace it)`);
  }
  await ensureDir(`${l.dir}/roots`);
  await ensureDir(`${l.dir}/signing`);
  const rootSigners = await newRootKeys(l, roots, [], force);
  const ctl = await newOnlineKey(l, CONTROLLER_KEY_FAMILY, CONTROLLER_SCOPES, [], force);
  const approver = await newOnlineKey(l, APPROVER_KEY_FAMILY, APPROVER_SCOPES, [], force);
  const doc: TrustRoot = {
    v: 1,
    ver: 1,
    iat: nowSec(opts.now),
    roots: rootSigners.map((s) => ({ kid: s.kid, pub: s.publicKey })),
    thr,
    keys: [ctl, approver],
    crit: 1,
  };
  const bytes = encodeTrustRoot(doc, rootSigners);
  openTrustRoot(bytes); // genesis self-check before anything points at it
  await writeDoc(l, 1, bytes);
  return summary(l, doc);
}

/** Reads and verifies (genesis rule: its own root threshold) the current trust root. */
export async function readCurrentTrust(l: CertsLayout): Promise<TrustRoot> {
  if (!(await exists(l.trustRoot))) throw new CertsError('not-found', `${l.trustRoot} is missing`);
  try {
    return openTrustRoot(new Uint8Array(await readFile(l.trustRoot)));
  } catch (err) {
    throw new CertsError('trust', `${l.trustRoot} does not verify: ${(err as Error).message}`);
  }
}

export interface RotateOptions {
  /** Replace the root keys with this many fresh ones (default: keep the current roots). */
  readonly newRoots?: number;
  /** Threshold of the new document (default: the current one, capped at the root count). */
  readonly threshold?: number;
  /** Replace the online keys (`ctl-N`, `approver-N`) with fresh ones. */
  readonly rotateSigning?: boolean;
  readonly now?: Date;
}

/**
 * Writes trust root v(N+1). Needs at least `thr(N)` current root private keys in `roots/`; the new
 * document carries their signatures and those of every new root ([TRUST-4]).
 */
export async function rotateTrust(l: CertsLayout, opts: RotateOptions = {}): Promise<TrustResult> {
  const current = await readCurrentTrust(l);
  const oldSigners: Signer[] = [];
  for (const r of current.roots) {
    if (!(await exists(l.rootKey(r.kid)))) continue;
    const s = await readSigner(l.rootKey(r.kid), r.kid);
    if (Buffer.from(s.publicKey).equals(Buffer.from(r.pub))) oldSigners.push(s);
  }
  if (oldSigners.length < current.thr) {
    throw new CertsError(
      'trust',
      `need ${current.thr} private keys of the current roots in ${l.dir}/roots, found ${oldSigners.length}`,
    );
  }
  const rootCount = opts.newRoots ?? current.roots.length;
  const thr = opts.threshold ?? Math.min(current.thr, rootCount);
  checkThreshold(rootCount, thr);

  const takenRoots = current.roots.map((r) => r.kid);
  const newSigners =
    opts.newRoots !== undefined ? await newRootKeys(l, opts.newRoots, takenRoots, false) : [];
  const roots =
    opts.newRoots !== undefined
      ? newSigners.map((s) => ({ kid: s.kid, pub: s.publicKey }))
      : current.roots.map((r) => ({ kid: r.kid, pub: r.pub }));

  let keys = current.keys.map((k) => ({ kid: k.kid, pub: k.pub, types: [...k.types] }));
  if (opts.rotateSigning) {
    const taken = keys.map((k) => k.kid);
    keys = [
      await newOnlineKey(l, CONTROLLER_KEY_FAMILY, CONTROLLER_SCOPES, taken, false),
      await newOnlineKey(l, APPROVER_KEY_FAMILY, APPROVER_SCOPES, taken, false),
    ];
  }
  const doc: TrustRoot = {
    v: 1,
    ver: current.ver + 1,
    iat: Math.max(nowSec(opts.now), current.iat),
    roots,
    thr,
    keys,
    crit: Math.min(current.crit, keys.filter((k) => k.types.includes('approve')).length || 1),
  };
  const signers = [...oldSigners];
  for (const s of newSigners) if (!signers.some((o) => o.kid === s.kid)) signers.push(s);
  let bytes: Uint8Array;
  try {
    bytes = encodeTrustRoot(doc, signers);
    openTrustRoot(bytes, { current });
  } catch (err) {
    throw new CertsError('trust', `rotation to v${doc.ver} does not verify: ${(err as Error).message}`);
  }
  await writeDoc(l, doc.ver, bytes);
  return summary(l, doc);
}

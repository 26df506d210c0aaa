/**
 * Test keys and trust roots, written where the agent looks for them (certs/src/layout.ts): a genesis
 * trust root signed by its own roots, an online signing key scoped to every command type, approvers
 * (`approve` scope) for critical changes, and the site's uplink key (PKCS#8 PEM).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { certsLayout } from '../../../certs/src/layout.js';
import {
  COMMAND_TYPES,
  createSigner,
  encodeTrustRoot,
  generateKeyPair,
  type KeyScope,
  privateKeyToPem,
  type Signer,
  type TrustRoot,
} from '../../../protocol/src/index.js';

export interface TestPki {
  readonly certsDir: string;
  readonly site: string;
  readonly roots: readonly Signer[];
  /** Online key allowed to sign every command type. */
  readonly signer: Signer;
  readonly approvers: readonly Signer[];
  readonly uplink: Signer;
  readonly root: TrustRoot;
  readonly trustBytes: Uint8Array;
  /** Uplink key lookup for openAck/openState. */
  keyFor(site: string): Uint8Array | undefined;
}

export function newSigner(kid: string): Signer {
  return createSigner(kid, generateKeyPair().seed);
}

export function trustDoc(
  ver: number,
  roots: readonly Signer[],
  keys: readonly { signer: Signer; types: readonly KeyScope[] }[],
  opts: { thr?: number; crit?: number; iat?: number } = {},
): TrustRoot {
  return {
    v: 1,
    ver,
    iat: opts.iat ?? Math.floor(Date.now() / 1000) - 60,
    roots: roots.map((r) => ({ kid: r.kid, pub: r.publicKey })),
    thr: opts.thr ?? 1,
    keys: keys.map((k) => ({ kid: k.signer.kid, pub: k.signer.publicKey, types: [...k.types] })),
    crit: opts.crit ?? 2,
  };
}

export function makePki(certsDir: string, site: string, opts: { crit?: number } = {}): TestPki {
  const roots = [newSigner('root-1'), newSigner('root-2')];
  const signer = newSigner('online-1');
  const approvers = [newSigner('approver-1'), newSigner('approver-2')];
  const uplinkKp = generateKeyPair();
  const uplink = createSigner(`site:${site}`, uplinkKp.seed);
  const root = trustDoc(
    1,
    roots,
    [
      { signer, types: COMMAND_TYPES },
      ...approvers.map((a) => ({ signer: a, types: ['approve'] as KeyScope[] })),
    ],
    { thr: 1, crit: opts.crit ?? 2 },
  );
  const trustBytes = encodeTrustRoot(root, [roots[0]!]);
  const layout = certsLayout(certsDir);
  mkdirSync(dirname(layout.trustRoot), { recursive: true });
  writeFileSync(layout.trustRoot, trustBytes);
  mkdirSync(layout.siteDir(site), { recursive: true });
  writeFileSync(layout.siteUplinkKey(site), privateKeyToPem(uplinkKp.seed), { mode: 0o600 });
  return {
    certsDir,
    site,
    roots,
    signer,
    approvers,
    uplink,
    root,
    trustBytes,
    keyFor: (s) => (s === site ? uplink.publicKey : undefined),
  };
}

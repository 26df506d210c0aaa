/** Deterministic test keys (sha256 of a label), so failures reproduce. */
import { createHash } from 'node:crypto';
import {
  COMMAND_TYPES,
  createSigner,
  type Signer,
  siteKid,
  TrustStore,
} from '../../../protocol/src/index.js';

export function seedOf(label: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`outpost-controller-test:${label}`).digest());
}

export const CONTROLLER_KID = 'ctl-test-1';
export const APPROVER_KID = 'appr-test-1';
export const controllerSigner = (): Signer => createSigner(CONTROLLER_KID, seedOf('controller'));
export const approverSigner = (): Signer => createSigner(APPROVER_KID, seedOf('approver'));
export const siteSigner = (site: string): Signer => createSigner(siteKid(site), seedOf(`site:${site}`));

/** A trust store (as an agent would hold) that lets `signer` sign every command type. */
export function trustFor(signer: Signer, approver?: Signer): TrustStore {
  const root = createSigner('root-test-1', seedOf('root'));
  return new TrustStore({
    v: 1,
    ver: 1,
    iat: 1_700_000_000,
    roots: [{ kid: root.kid, pub: root.publicKey }],
    thr: 1,
    keys: [
      { kid: signer.kid, pub: signer.publicKey, types: [...COMMAND_TYPES] },
      ...(approver ? [{ kid: approver.kid, pub: approver.publicKey, types: ['approve' as const] }] : []),
    ],
    crit: 1,
  });
}

export const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';

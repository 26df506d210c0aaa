/**
 * Deterministic identities of simulated sites: site ids `sim-00001`…, and each site's Ed25519 uplink
 * key derived from its id (sha256 of a label), so the controller can be enrolled with the public keys
 * without any key file per site, and every process derives the same keys.
 */
import { createHash } from 'node:crypto';
import { createSigner, type Signer, siteKid } from '../../protocol/src/index.js';

/** `sim-00001` … (ids match the site grammar of [TOP-2]). */
export function siteId(i: number, prefix = 'sim'): string {
  return `${prefix}-${String(i).padStart(5, '0')}`;
}

export function siteIds(n: number, prefix = 'sim'): string[] {
  return Array.from({ length: n }, (_, i) => siteId(i + 1, prefix));
}

/** The 32-byte seed of a site's uplink key. */
export function uplinkSeed(site: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`outpost-sim:uplink:${site}`).digest());
}

/** The site's uplink signer (kid `site:<site>`, [ENV-UP-1]). */
export function uplinkSigner(site: string): Signer {
  return createSigner(siteKid(site), uplinkSeed(site));
}

/** The raw public key, base64 (what `POST /v1/sites` accepts as `uplinkKey`). */
export function uplinkKeyB64(site: string): string {
  return Buffer.from(uplinkSigner(site).publicKey).toString('base64');
}

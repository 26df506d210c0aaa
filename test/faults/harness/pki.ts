/**
 * The fault suite's PKI, made with the certs library exactly as an operator would (`outpost certs
 * init` + `certs site`): CA, broker/controller/admin certificates, command-signing keys and trust root
 * v1, plus one client certificate and uplink key per site. openssl does the X.509 work.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CertsLayout, certsLayout, initCerts, issueSiteCert } from '../../../certs/src/index.js';
import { createSigner, privateKeyFromPem, type Signer } from '../../../protocol/src/index.js';

export interface FaultPki {
  readonly dir: string;
  readonly layout: CertsLayout;
  /** kid of the controller's command-signing key (`ctl-N`). */
  readonly signingKid: string;
  /** The controller's signing key, for tests that forge or replay envelopes (I9). */
  signer(): Signer;
  /** Issues a site certificate and uplink key (idempotent per site). */
  addSite(site: string): Promise<void>;
  /** The site's uplink public key (SPKI PEM), as enrolment sends it. */
  uplinkPem(site: string): string;
}

export async function makeFaultPki(root: string, sites: readonly string[]): Promise<FaultPki> {
  const dir = join(root, 'certs');
  await initCerts(dir);
  const layout = certsLayout(dir);
  const signingKid = readdirSync(join(dir, 'signing'))
    .filter((f) => f.startsWith('ctl-') && f.endsWith('.key'))
    .map((f) => f.slice(0, -4))[0];
  if (!signingKid) throw new Error(`no ctl-* signing key in ${dir}/signing`);
  const issued = new Set<string>();
  const pki: FaultPki = {
    dir,
    layout,
    signingKid,
    signer: () =>
      createSigner(signingKid, privateKeyFromPem(readFileSync(layout.signingKey(signingKid), 'utf8')).seed),
    async addSite(site) {
      if (issued.has(site)) return;
      await issueSiteCert(dir, site);
      issued.add(site);
    },
    uplinkPem: (site) => readFileSync(layout.siteUplinkPub(site), 'utf8'),
  };
  for (const s of sites) await pki.addSite(s);
  return pki;
}

/**
 * The simulator's PKI: `initCerts` (CA, broker/controller certificates, signing keys, genesis trust
 * root) into a temp folder, as `outpost certs init` does. Sites do not get certificates of their own
 * unless asked (`issueSiteCert`, one openssl run each): the fleet uses the broker's plain loopback
 * listener, the wire benchmark's single agent uses TLS.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CertsLayout, initCerts, issueSiteCert } from '../../certs/src/index.js';

export interface SimPki {
  readonly dir: string;
  readonly layout: CertsLayout;
  readonly controllerKid: string;
  readonly approverKid: string;
  /** Issues a site certificate (CN = site) and uplink key files. */
  issueSite(site: string): Promise<void>;
  remove(): void;
}

export async function makePki(parent?: string): Promise<SimPki> {
  const root = parent ?? mkdtempSync(join(tmpdir(), 'outpost-sim-'));
  const dir = join(root, 'certs');
  const init = await initCerts(dir);
  return {
    dir,
    layout: init.layout,
    controllerKid: init.controllerKid,
    approverKid: init.approverKid,
    async issueSite(site) {
      await issueSiteCert(dir, site);
    },
    remove() {
      // SIM_KEEP=1 keeps the data (controller database and log, sites' databases) for a post-mortem.
      if (process.env['SIM_KEEP']) {
        process.stderr.write(`sim: kept ${root}\n`);
        return;
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
}

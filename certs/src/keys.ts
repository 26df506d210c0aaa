/**
 * Ed25519 key files (command-signing keys, root keys, site uplink keys): PKCS#8 PEM private key 0600
 * next to an SPKI PEM public key. Generated and read with the protocol library (node:crypto).
 */
import { readFile } from 'node:fs/promises';
import {
  createSigner,
  generateKeyPair,
  type KeyPair,
  privateKeyFromPem,
  privateKeyToPem,
  publicKeyToPem,
  type Signer,
} from '../../protocol/src/index.js';
import { CertsError } from './errors.js';
import { exists, writeAtomic, writePrivate } from './files.js';

export async function writeKeyPair(
  keyPath: string,
  pubPath: string,
  opts: { force?: boolean; pair?: KeyPair } = {},
): Promise<KeyPair> {
  if (!opts.force && (await exists(keyPath))) {
    throw new CertsError('exists', `${keyPath} already exists (use --force to replace it)`);
  }
  const pair = opts.pair ?? generateKeyPair();
  await writePrivate(keyPath, privateKeyToPem(pair.seed));
  await writeAtomic(pubPath, publicKeyToPem(pair.publicKey));
  return pair;
}

export async function readKeyPair(keyPath: string): Promise<KeyPair> {
  if (!(await exists(keyPath))) throw new CertsError('not-found', `${keyPath} is missing`);
  return privateKeyFromPem(await readFile(keyPath, 'utf8'));
}

export async function readSigner(keyPath: string, kid: string): Promise<Signer> {
  return createSigner(kid, (await readKeyPair(keyPath)).seed);
}

/** Next kid in a numbered family: `ctl-1`, `ctl-2` → `ctl-3`. */
export function nextKid(family: string, existing: readonly string[]): string {
  let max = 0;
  for (const kid of existing) {
    const m = new RegExp(`^${family}-(\\d+)$`).exec(kid);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return `${family}-${max + 1}`;
}

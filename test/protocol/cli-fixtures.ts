/** Key, trust-root and envelope files shared by the `outpost envelope` suites. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  encodeAck,
  encodeCommand,
  encodeState,
  encodeTrustRoot,
  privateKeyToPem,
  publicKeyToPem,
} from '../../protocol/src/index.js';
import {
  ack,
  command,
  controller,
  IAT,
  root1,
  seedOf,
  siteSigner,
  state,
  toHexStr,
  trustDoc,
  trustRootBytes,
} from './helpers.js';

export interface CliFiles {
  dir: string;
  f(name: string): string;
  cleanup(): void;
}

/** Writes the files into a fresh temp dir. `openssl` adds a key pair made by `openssl genpkey`. */
export function cliFiles(opts: { openssl?: boolean } = {}): CliFiles {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-envelope-cli-'));
  const f = (name: string) => join(dir, name);
  writeFileSync(f('ctl.key'), privateKeyToPem(seedOf('ctl-1')));
  writeFileSync(f('ctl.pub'), publicKeyToPem(controller.publicKey));
  writeFileSync(f('hb.key'), privateKeyToPem(seedOf('hb-1')));
  writeFileSync(f('other.pub'), publicKeyToPem(seedOf('other-pub')));
  writeFileSync(f('site.pub'), publicKeyToPem(siteSigner.publicKey));
  writeFileSync(f('trust-v1.cbor'), trustRootBytes());
  writeFileSync(f('trust-v2.cbor'), encodeTrustRoot(trustDoc({ ver: 2 }), [root1]));
  writeFileSync(f('trust-v3.cbor'), encodeTrustRoot(trustDoc({ ver: 3 }), [root1]));
  const hb = encodeCommand(command('heartbeat'), controller);
  writeFileSync(f('hb.cbor'), hb);
  writeFileSync(f('hb.hex'), `${toHexStr(hb)}\n`);
  writeFileSync(f('ack.b64'), Buffer.from(encodeAck(ack(), siteSigner)).toString('base64'));
  writeFileSync(f('state.cbor'), encodeState(state(), siteSigner));
  writeFileSync(f('garbage.txt'), 'this is not an envelope!');
  writeFileSync(f('truncated.hex'), 'd2844aa2012704');
  writeFileSync(f('huge.hex'), 'a'.repeat(1024 * 1024 + 2));
  if (opts.openssl) {
    execFileSync('openssl', ['genpkey', '-algorithm', 'ed25519', '-out', f('openssl.key')]);
    writeFileSync(f('openssl.pub'), execFileSync('openssl', ['pkey', '-in', f('openssl.key'), '-pubout']));
  }
  return { dir, f, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** `envelope sign` with the fixed kid, site, issued-at and seq the suites use. */
export const signArgs = (extra: string[]): string[] => [
  'envelope',
  'sign',
  '--kid',
  'ctl-1',
  '--site',
  'plant-01',
  '--iat',
  String(IAT),
  '--seq',
  '7',
  ...extra,
];

export const inspectArgs = (...args: string[]): string[] => ['envelope', 'inspect', ...args];

export const parseJson = (s: string): Record<string, unknown> => JSON.parse(s) as Record<string, unknown>;

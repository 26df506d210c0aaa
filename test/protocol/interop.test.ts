/**
 * [ENV-INTEROP] Our envelopes against an independent COSE implementation: @ldclabs/cose-ts (COSE on
 * cborg + @noble/curves), and cborg as an independent CBOR codec.
 *
 * cose-ts's dist uses extensionless relative imports, which Node's ESM loader cannot resolve, so it is
 * loaded through tsx's resolver (`tsImport`). cose-ts 1.5 has no COSE_Sign (multi-signer) message:
 * the trust root is checked signature by signature with its Ed25519Key over a Sig_structure built by
 * cborg, and a COSE_Sign assembled from cborg + cose-ts keys is opened by us.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as cborg from 'cborg';
import { tsImport } from 'tsx/esm/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  COMMAND_LIMITS,
  decodeSpec,
  encodeTrustRoot,
  openCommand,
  openTrustRoot,
  parseSign,
  parseSign1,
  privateKeyToPem,
  sigStructureMulti,
  TrustStore,
  verifySign1,
} from '../../protocol/src/index.js';
import { runCli } from './cli-run.js';
import { codeOf, controller, IAT, root1, root2, SITE, seedOf, toHexStr, trustDoc } from './helpers.js';

// The slice of cose-ts's API used here. Its .d.ts files also use extensionless imports, which
// NodeNext resolution cannot follow, so the types are declared locally.
interface CoseHeader {
  setParam(label: number, value: number | Uint8Array): CoseHeader;
  getInt(label: number): number;
  getBytes(label: number): Uint8Array;
  toRaw(): Map<unknown, unknown>;
  toBytes(): Uint8Array;
}
interface CoseKey {
  sign(message: Uint8Array): Uint8Array;
  verify(message: Uint8Array, signature: Uint8Array): boolean;
}
interface CoseSign1 {
  payload: Uint8Array;
  protected: CoseHeader | null;
  unprotected: CoseHeader | null;
  toBytes(key: CoseKey): Uint8Array;
}
let Sign1Message: {
  new (payload: Uint8Array, protectedHeader?: CoseHeader, unprotected?: CoseHeader): CoseSign1;
  fromBytes(key: CoseKey, coseData: Uint8Array): CoseSign1;
  withTag(coseData: Uint8Array): Uint8Array;
};
let Ed25519Key: {
  fromSecret(secret: Uint8Array, kid?: Uint8Array): CoseKey;
  fromPublic(pub: Uint8Array, kid?: Uint8Array): CoseKey;
};
let Header: new () => CoseHeader;

const dir = mkdtempSync(join(tmpdir(), 'outpost-interop-'));
const keyFile = join(dir, 'ctl-1.key');

beforeAll(async () => {
  ({ Sign1Message } = await tsImport('@ldclabs/cose-ts/sign1', import.meta.url));
  ({ Ed25519Key } = await tsImport('@ldclabs/cose-ts/ed25519', import.meta.url));
  ({ Header } = await tsImport('@ldclabs/cose-ts/header', import.meta.url));
  writeFileSync(keyFile, privateKeyToPem(seedOf('ctl-1')), { mode: 0o600 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const kidBytes = (kid: string) => new TextEncoder().encode(kid);
const SPEC_JSON = {
  svc: {
    web: { img: 'registry.local/acme/web', dig: { $hex: 'ab'.repeat(32) }, mem: 2 ** 33, ports: ['80:80'] },
  },
};

describe('outpost envelope sign -> cose-ts + cborg [ENV-INTEROP]', { timeout: 120_000 }, () => {
  it('verifies with cose-ts, and the payload decodes with cborg to the expected values', async () => {
    const body = JSON.stringify({ stack: 'web', rev: 2, spec: SPEC_JSON });
    const r = await runCli([
      'envelope',
      'sign',
      '--key',
      keyFile,
      '--kid',
      'ctl-1',
      '--site',
      SITE,
      '--type',
      'stack.apply',
      '--seq',
      '42',
      '--iat',
      String(IAT),
      '--expires-in',
      '2h',
      '--id',
      '0123456789abcdef0123456789abcdef',
      '--body',
      body,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const env = new Uint8Array(Buffer.from(r.out.trim(), 'hex'));

    const msg = Sign1Message.fromBytes(Ed25519Key.fromPublic(controller.publicKey), env);
    expect(msg.protected!.getInt(1)).toBe(-8);
    expect(msg.protected!.getBytes(4)).toEqual(kidBytes('ctl-1'));
    expect(msg.unprotected!.toRaw().size).toBe(0);
    const other = Ed25519Key.fromPublic(seedOf('other').subarray(0, 32));
    expect(() => Sign1Message.fromBytes(other, env)).toThrow();

    const p = cborg.decode(msg.payload) as Record<string, unknown>;
    expect(p).toMatchObject({
      v: 1,
      site: SITE,
      seq: 42,
      prev: 41,
      iat: IAT,
      exp: IAT + 7200,
      type: 'stack.apply',
    });
    expect(toHexStr(p.id as Uint8Array)).toBe('0123456789abcdef0123456789abcdef');
    const b = p.body as { stack: string; rev: number; spec: Uint8Array; z?: boolean };
    expect(b.stack).toBe('web');
    expect(b.rev).toBe(2);
    const spec = decodeSpec(b.spec, b.z === true);
    expect(spec.svc.web!.mem).toBe(2 ** 33);
    expect(toHexStr(spec.svc.web!.dig!)).toBe('ab'.repeat(32));
  });
});

describe('cose-ts -> parseSign1 / verifySign1 / openCommand [ENV-INTEROP]', () => {
  const trust = new TrustStore(trustDoc());
  const cmd = {
    v: 1,
    site: SITE,
    seq: 9,
    prev: 8,
    id: new Uint8Array(16).fill(0x11),
    iat: IAT,
    exp: IAT + 600,
    type: 'stack.apply',
    // cborg writes mem = 2^33 with an 8-byte head, which we must read as a number.
    body: { stack: 'web', rev: 3, spec: cborg.encode({ svc: { web: { img: 'web', mem: 2 ** 33 } } }) },
  };

  function coseTsSign1(unprotected?: CoseHeader): Uint8Array {
    const key = Ed25519Key.fromSecret(seedOf('ctl-1'), kidBytes('ctl-1'));
    const prot = new Header().setParam(1, -8).setParam(4, kidBytes('ctl-1'));
    const msg = new Sign1Message(cborg.encode(cmd), prot, unprotected);
    return Sign1Message.withTag(msg.toBytes(key));
  }

  it('a COSE_Sign1 made by cose-ts (kid protected, unprotected empty) opens as a command', () => {
    const env = coseTsSign1(new Header());
    const parts = parseSign1(env, COMMAND_LIMITS);
    expect(parts.kid).toBe('ctl-1');
    expect(verifySign1(parts, controller.publicKey)).toBe(true);
    const { cmd: got } = openCommand(env, { site: SITE, trust, nowSec: IAT + 1 });
    expect(got.seq).toBe(9);
    const body = got.body as { spec: Uint8Array };
    expect(decodeSpec(body.spec, false).svc.web!.mem).toBe(2 ** 33);
  });

  it('cose-ts by default puts the kid in the unprotected header: our strict rules reject that [ENV-2]', () => {
    const env = coseTsSign1(); // no unprotected header given -> cose-ts copies the key's kid into it
    const [, unprot] = cborg.decode(env, {
      useMaps: true,
      tags: Object.assign([], { 18: (v: unknown) => v }),
    }) as [Uint8Array, Map<number, Uint8Array>];
    expect(unprot.has(4)).toBe(true); // (cose-ts stores a key's kid CBOR-encoded: h'4563746c2d31')
    // Valid COSE (cose-ts verifies it), but outside our profile: the kid must be protected.
    expect(
      Sign1Message.fromBytes(Ed25519Key.fromPublic(controller.publicKey), env).payload.length,
    ).toBeGreaterThan(0);
    expect(codeOf(() => parseSign1(env, COMMAND_LIMITS))).toBe('malformed');
  });
});

describe('trust root (COSE_Sign) with cose-ts keys and cborg [ENV-5] [ENV-INTEROP]', () => {
  const withTag98 = (b: Uint8Array) => new Uint8Array([0xd8, 0x62, ...b]);

  it('every signature of our trust root verifies with cose-ts over a cborg-built Sig_structure', () => {
    const bytes = encodeTrustRoot(trustDoc({ thr: 2 }), [root1, root2]);
    const decoded = cborg.decode(bytes, { tags: Object.assign([], { 98: (v: unknown) => v }) }) as [
      Uint8Array,
      unknown,
      Uint8Array,
      [Uint8Array, unknown, Uint8Array][],
    ];
    const [bodyProt, , payload, sigs] = decoded;
    expect(bodyProt.length).toBe(0);
    expect(sigs).toHaveLength(2);
    const pubs = [root1.publicKey, root2.publicKey];
    sigs.forEach(([prot, , sig], i) => {
      const toBeSigned = cborg.encode(['Signature', new Uint8Array(0), prot, new Uint8Array(0), payload]);
      expect(toHexStr(toBeSigned)).toBe(toHexStr(sigStructureMulti(new Uint8Array(0), prot, payload)));
      expect(Ed25519Key.fromPublic(pubs[i]!).verify(toBeSigned, sig)).toBe(true);
    });
  });

  it('a COSE_Sign assembled with cborg and signed by cose-ts keys opens with openTrustRoot', () => {
    const doc = trustDoc({ thr: 2 });
    const payload = cborg.encode(doc);
    const sigs = [root1, root2].map((r, i) => {
      const prot = new Header().setParam(1, -8).setParam(4, kidBytes(r.kid)).toBytes();
      const key = Ed25519Key.fromSecret(seedOf(`root-${i + 1}`));
      const sig = key.sign(cborg.encode(['Signature', new Uint8Array(0), prot, new Uint8Array(0), payload]));
      return [prot, new Map(), sig];
    });
    const bytes = withTag98(cborg.encode([new Uint8Array(0), new Map(), payload, sigs]));
    expect(parseSign(bytes, COMMAND_LIMITS).signatures.map((s) => s.kid)).toEqual(['root-1', 'root-2']);
    const opened = openTrustRoot(bytes);
    expect(opened.thr).toBe(2);
    expect(opened.keys.map((k) => k.kid)).toEqual(doc.keys.map((k) => k.kid));
  });
});

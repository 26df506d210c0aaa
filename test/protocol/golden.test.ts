/**
 * Golden wire vectors (test/fixtures/protocol/golden.json, made once by generate.ts next to it).
 * This suite never regenerates them: it re-signs the committed payloads with the committed seeds and
 * must reproduce the committed bytes exactly, and decodes the committed bytes to the committed JSON.
 * A failure here is a wire-format change.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fromJson, toJson } from '../../cli/envelope.js';
import {
  type Ack,
  COMMAND_LIMITS,
  COMMAND_TYPES,
  type Command,
  createSigner,
  decode,
  decodeSpec,
  encodeAck,
  encodeCommand,
  encodeSpec,
  encodeState,
  encodeTrustRoot,
  naclEd25519,
  nodeEd25519,
  openAck,
  openCommand,
  openState,
  openTrustRoot,
  parseSign,
  parseSign1,
  type StackSpec,
  type State,
  sha256,
  type TrustRoot,
  TrustStore,
  toHex,
} from '../../protocol/src/index.js';
import { hex } from './helpers.js';

interface Key {
  kid: string;
  seed: string;
  pub: string;
}
interface Sign1Vector {
  name?: string;
  payload: unknown;
  hex: string;
  decoded: { kid: string; protectedHex: string; payload: unknown; signature: string };
  spec?: unknown;
  specDigest?: string;
  specPlainHex?: string;
}
const golden = JSON.parse(
  readFileSync(new URL('../fixtures/protocol/golden.json', import.meta.url), 'utf8'),
) as {
  keys: Record<'root' | 'controller' | 'site', Key>;
  trustRoot: { doc: unknown; hex: string; decoded: { signatures: { kid: string; signature: string }[] } };
  commands: Sign1Vector[];
  ack: Sign1Vector;
  state: Sign1Vector;
};

const signer = (k: Key) => createSigner(k.kid, hex(k.seed));
const SITE = 'plant-01';

describe('golden keys', () => {
  it.each(Object.entries(golden.keys))('%s: seed -> public key with both implementations', (_role, k) => {
    expect(toHex(nodeEd25519.publicKey(hex(k.seed)))).toBe(k.pub);
    expect(toHex(naclEd25519.publicKey(hex(k.seed)))).toBe(k.pub);
  });
});

describe('golden trust root [TRUST-1] [ENV-5]', () => {
  it('re-signing the committed document reproduces the committed bytes', () => {
    const doc = fromJson(golden.trustRoot.doc) as TrustRoot;
    expect(toHex(encodeTrustRoot(doc, [signer(golden.keys.root)]))).toBe(golden.trustRoot.hex);
  });
  it('the committed bytes open (genesis) to the committed document', () => {
    const doc = openTrustRoot(hex(golden.trustRoot.hex));
    expect(toJson(doc)).toEqual(golden.trustRoot.doc);
    const parts = parseSign(hex(golden.trustRoot.hex), COMMAND_LIMITS);
    expect(parts.signatures.map((s) => ({ kid: s.kid, signature: toHex(s.signature) }))).toEqual(
      golden.trustRoot.decoded.signatures.map((s) => ({ kid: s.kid, signature: s.signature })),
    );
  });
});

describe('golden command envelopes [PAY-CMD] [ENV-1]..[ENV-4]', () => {
  const trust = new TrustStore(openTrustRoot(hex(golden.trustRoot.hex)));
  const ctl = signer(golden.keys.controller);

  it('cover every command type once', () => {
    expect(golden.commands.map((c) => c.name)).toEqual([...COMMAND_TYPES]);
  });

  describe.each(golden.commands.map((c) => [c.name!, c] as const))('%s', (_name, v) => {
    it('re-signing the committed payload reproduces the committed bytes', () => {
      expect(toHex(encodeCommand(fromJson(v.payload) as Command, ctl))).toBe(v.hex);
    });

    it('the committed bytes decode to the committed JSON', () => {
      const parts = parseSign1(hex(v.hex), COMMAND_LIMITS);
      expect(parts.kid).toBe(v.decoded.kid);
      expect(toHex(parts.protectedBytes)).toBe(v.decoded.protectedHex);
      expect(toHex(parts.signature)).toBe(v.decoded.signature);
      expect(toJson(decode(parts.payload))).toEqual(v.decoded.payload);
      expect(v.decoded.payload).toEqual(v.payload);
    });

    it('the committed bytes open as a valid command for the site, with both implementations', () => {
      for (const impl of [nodeEd25519, naclEd25519]) {
        const { cmd } = openCommand(hex(v.hex), {
          site: SITE,
          trust,
          nowSec: (v.payload as Command).iat + 1,
          impl,
        });
        expect(toJson(cmd)).toEqual(v.payload);
      }
    });
  });

  it('stack.apply carries the reference spec: digest, deflate and plain encoding [PAY-SPEC-2]', () => {
    const v = golden.commands.find((c) => c.name === 'stack.apply')!;
    const body = (fromJson(v.payload) as Command & { type: 'stack.apply' }).body;
    expect(toHex(sha256(body.spec))).toBe(v.specDigest);
    expect(toJson(decodeSpec(body.spec, body.z === true))).toEqual(v.spec);
    expect(toHex(encodeSpec(fromJson(v.spec) as StackSpec, 'never').bytes)).toBe(v.specPlainHex);
    expect(hex(v.hex).length).toBeLessThan(640); // leaves room for MQTT framing within 700 bytes (DESIGN §7)
  });

  it('trust.update carries a v2 trust root that follows the golden v1', () => {
    const v = golden.commands.find((c) => c.name === 'trust.update')!;
    const body = (fromJson(v.payload) as Command & { type: 'trust.update' }).body;
    const v1 = openTrustRoot(hex(golden.trustRoot.hex));
    expect(openTrustRoot(body.doc, { current: v1 }).ver).toBe(2);
  });
});

describe('golden uplink [PAY-ACK] [PAY-STATE] [ENV-UP-1]', () => {
  const site = signer(golden.keys.site);
  const keys = (s: string) => (s === SITE ? site.publicKey : undefined);

  it('ack: re-signs to the committed bytes, decodes and opens to the committed JSON', () => {
    const v = golden.ack;
    expect(toHex(encodeAck(fromJson(v.payload) as Ack, site))).toBe(v.hex);
    const parts = parseSign1(hex(v.hex), COMMAND_LIMITS);
    expect(parts.kid).toBe('site:plant-01');
    expect(toHex(parts.signature)).toBe(v.decoded.signature);
    expect(toJson(decode(parts.payload))).toEqual(v.decoded.payload);
    expect(toJson(openAck(hex(v.hex), keys, SITE))).toEqual(v.payload);
  });

  it('state: re-signs to the committed bytes, decodes and opens to the committed JSON', () => {
    const v = golden.state;
    expect(toHex(encodeState(fromJson(v.payload) as State, site))).toBe(v.hex);
    const parts = parseSign1(hex(v.hex), COMMAND_LIMITS);
    expect(toHex(parts.protectedBytes)).toBe(v.decoded.protectedHex);
    expect(toJson(decode(parts.payload))).toEqual(v.decoded.payload);
    expect(toJson(openState(hex(v.hex), keys, SITE))).toEqual(v.payload);
  });
});

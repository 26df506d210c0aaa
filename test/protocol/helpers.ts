/**
 * Shared builders for the protocol suites: deterministic keys, a trust root, valid commands, acks and
 * state. Everything is derived from fixed labels, so failures reproduce exactly.
 */
import { createHash } from 'node:crypto';
import {
  type Ack,
  COMMAND_TYPES,
  type Command,
  type CommandType,
  createSigner,
  encodeTrustRoot,
  KEY_SCOPES,
  ProtocolError,
  type ReasonCode,
  type Signer,
  type State,
  siteKid,
  type TrustRoot,
  TrustStore,
} from '../../protocol/src/index.js';

export const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
export const toHexStr = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A 32-byte seed derived from a label (sha256), so every test key is reproducible. */
export function seedOf(label: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`outpost-test:${label}`).digest());
}

export function signerOf(kid: string, label: string = kid): Signer {
  return createSigner(kid, seedOf(label));
}

export const SITE = 'plant-01';
export const OTHER_SITE = 'plant-02';
export const IAT = 1_767_225_600; // 2026-01-01T00:00:00Z
export const NOW = IAT + 60;

export const root1 = signerOf('root-1');
export const root2 = signerOf('root-2');
export const controller = signerOf('ctl-1');
/** May only sign heartbeats. */
export const heartbeatOnly = signerOf('hb-1');
export const approver1 = signerOf('appr-1');
export const approver2 = signerOf('appr-2');
export const siteSigner = signerOf(siteKid(SITE));
export const otherSiteSigner = signerOf(siteKid(OTHER_SITE));

export function trustDoc(over: Partial<TrustRoot> = {}): TrustRoot {
  return {
    v: 1,
    ver: 1,
    iat: IAT - 86_400,
    roots: [
      { kid: root1.kid, pub: root1.publicKey },
      { kid: root2.kid, pub: root2.publicKey },
    ],
    thr: 1,
    keys: [
      { kid: controller.kid, pub: controller.publicKey, types: [...COMMAND_TYPES] },
      { kid: heartbeatOnly.kid, pub: heartbeatOnly.publicKey, types: ['heartbeat'] },
      { kid: approver1.kid, pub: approver1.publicKey, types: ['approve'] },
      { kid: approver2.kid, pub: approver2.publicKey, types: ['approve'] },
    ],
    crit: 2,
    ...over,
  };
}

export const trust = new TrustStore(trustDoc());
export const trustRootBytes = (): Uint8Array => encodeTrustRoot(trustDoc(), [root1]);
export const ALL_SCOPES = KEY_SCOPES;

const SPEC_BYTES = Uint8Array.of(0xa1, 0x63, 0x73, 0x76, 0x63, 0xa0); // any bytes: body schema only

/** A valid body for each command type. */
export function bodyFor(type: CommandType): Command['body'] {
  switch (type) {
    case 'stack.apply':
      return { stack: 'web', rev: 3, spec: SPEC_BYTES };
    case 'stack.remove':
      return { stack: 'web' };
    case 'stack.restart':
      return { stack: 'web', svc: ['api'] };
    case 'state.request':
      return { full: true };
    case 'heartbeat':
      return { last: 7 };
    case 'trust.update':
      return { doc: trustRootBytes() };
  }
}

export function command(type: CommandType = 'heartbeat', over: Partial<Command> = {}): Command {
  return {
    v: 1,
    site: SITE,
    seq: 7,
    prev: 6,
    id: hex('00112233445566778899aabbccddeeff'),
    iat: IAT,
    exp: IAT + 3600,
    type,
    body: bodyFor(type),
    ...over,
  } as Command;
}

export function ack(over: Partial<Ack> = {}): Ack {
  return { v: 1, site: SITE, useq: 12, at: IAT + 5, st: 'applied', seq: 7, type: 'stack.apply', ...over };
}

export function state(over: Partial<State> = {}): State {
  return {
    v: 1,
    site: SITE,
    useq: 13,
    at: IAT + 6,
    full: true,
    last: 7,
    trust: 1,
    stacks: [
      {
        name: 'web',
        rev: 3,
        want: 3,
        h: 'healthy',
        svc: [{ n: 'api', st: 'running', h: 'healthy', rs: 0 }],
      },
    ],
    alarms: [],
    ...over,
  };
}

/** Site uplink keys as the controller knows them from enrolment. */
export const siteKeys = (site: string): Uint8Array | undefined =>
  site === SITE ? siteSigner.publicKey : site === OTHER_SITE ? otherSiteSigner.publicKey : undefined;

/** Runs `fn` and returns the ProtocolError code it throws; fails the test on success or another error. */
export function codeOf(fn: () => unknown): ReasonCode {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProtocolError) return err.code;
    throw new Error(`expected a ProtocolError, got ${String(err)}`);
  }
  throw new Error('expected a ProtocolError, but the call succeeded');
}

/** Returns a copy of `buf` with `replacement` spliced in at [start, end). */
export function splice(buf: Uint8Array, start: number, end: number, replacement: Uint8Array): Uint8Array {
  const out = new Uint8Array(buf.length - (end - start) + replacement.length);
  out.set(buf.subarray(0, start), 0);
  out.set(replacement, start);
  out.set(buf.subarray(end), start + replacement.length);
  return out;
}

/**
 * Signed messages (SPEC [ENV-*], [PAY-*]): commands (controller -> agent), acks and state
 * (agent -> controller), critical-change approvals, and the stack spec carried inside stack.apply.
 *
 * `open*` functions are the only way bytes become typed messages. Their checks run in a fixed order
 * ([ENV-7]): size -> structure -> key lookup -> signature -> payload schema -> version -> key scope
 * -> site -> time. Each failure is a ProtocolError with its reason code; nothing unauthenticated is
 * decoded beyond the COSE structure.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { decode, encode, type ScanLimits } from './cbor.js';
import { parseSign1, type Signer, sign1, verifySign1 } from './cose.js';
import { type Ed25519Impl, ed25519 } from './ed25519.js';
import { ProtocolError } from './reasons.js';
import {
  type Ack,
  AckSchema,
  type Approval,
  ApprovalSchema,
  COMMAND_BODIES,
  type Command,
  CommandHeaderSchema,
  check,
  isCommandType,
  PROTOCOL_VERSION,
  type Service,
  type StackSpec,
  StackSpecSchema,
  type State,
  StateSchema,
} from './schemas.js';
import type { TrustStore } from './trust.js';

export const COMMAND_LIMITS: ScanLimits = Object.freeze({
  maxBytes: 256 * 1024,
  maxDepth: 16,
  maxItems: 20_000,
});
export const UPLINK_LIMITS: ScanLimits = Object.freeze({
  maxBytes: 64 * 1024,
  maxDepth: 12,
  maxItems: 10_000,
});
export const SPEC_LIMITS: ScanLimits = Object.freeze({
  maxBytes: 512 * 1024,
  maxDepth: 12,
  maxItems: 20_000,
});
/** Signed issued-at may lead trusted time by at most this much (clock skew allowance). */
export const DEFAULT_MAX_FUTURE_SEC = 24 * 3600;

export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest());
}

/** Correlation id of a received envelope: the first 8 bytes of its sha256 ([ACK-3]). */
export function envelopeRef(bytes: Uint8Array): Uint8Array {
  return sha256(bytes).subarray(0, 8);
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

// ---- commands -----------------------------------------------------------------------------------

function checkCommand(value: unknown): Command {
  const hdr = check(CommandHeaderSchema, value, 'command');
  if (!isCommandType(hdr.type)) throw new ProtocolError('unknown-type', `unknown command type ${hdr.type}`);
  check(COMMAND_BODIES[hdr.type], hdr.body, `${hdr.type} body`);
  if (hdr.exp <= hdr.iat) throw new ProtocolError('malformed', 'exp is not after iat');
  if (hdr.prev >= hdr.seq) throw new ProtocolError('malformed', 'prev is not below seq');
  return hdr as Command;
}

/** Validates, encodes and signs a command. */
export function encodeCommand(cmd: Command, signer: Signer): Uint8Array {
  checkCommand(cmd);
  return sign1(encode(cmd), signer);
}

export interface OpenCommandContext {
  /** This agent's site id. */
  readonly site: string;
  readonly trust: TrustStore;
  /** Trusted time, seconds. */
  readonly nowSec: number;
  readonly limits?: ScanLimits;
  readonly impl?: Ed25519Impl;
  readonly maxFutureSec?: number;
}

export interface OpenedCommand {
  readonly cmd: Command;
  readonly kid: string;
}

/** Verifies and decodes a command envelope for this site. Throws ProtocolError. Does not check replay. */
export function openCommand(bytes: Uint8Array, ctx: OpenCommandContext): OpenedCommand {
  const limits = ctx.limits ?? COMMAND_LIMITS;
  const parts = parseSign1(bytes, limits);
  const pub = ctx.trust.anyKey(parts.kid);
  if (!pub)
    throw new ProtocolError('unknown-key', `kid ${parts.kid} is not in trust root v${ctx.trust.version}`);
  if (!verifySign1(parts, pub, ctx.impl))
    throw new ProtocolError('bad-signature', `signature by ${parts.kid} does not verify`);
  const cmd = checkCommand(decode(parts.payload, limits));
  if (cmd.v !== PROTOCOL_VERSION) throw new ProtocolError('unsupported-version', `protocol version ${cmd.v}`);
  // An expired trust root only lets a renewal through ([TRUST-6]).
  if (ctx.trust.expired(ctx.nowSec) && cmd.type !== 'trust.update') {
    throw new ProtocolError(
      'expired',
      `trust root v${ctx.trust.version} expired; only trust.update is accepted`,
    );
  }
  if (!ctx.trust.keyFor(parts.kid, cmd.type)) {
    throw new ProtocolError('unknown-key', `kid ${parts.kid} may not sign ${cmd.type}`);
  }
  if (cmd.site !== ctx.site) throw new ProtocolError('wrong-site', `command is for site ${cmd.site}`);
  if (cmd.exp <= ctx.nowSec)
    throw new ProtocolError('expired', `expired at ${cmd.exp}, trusted time ${ctx.nowSec}`);
  if (cmd.iat > ctx.nowSec + (ctx.maxFutureSec ?? DEFAULT_MAX_FUTURE_SEC)) {
    throw new ProtocolError('not-yet-valid', `issued at ${cmd.iat}, trusted time ${ctx.nowSec}`);
  }
  return { cmd, kid: parts.kid };
}

// ---- uplink: acks and state ---------------------------------------------------------------------

/** The kid a site signs its uplink with ([ENV-UP-1]). */
export function siteKid(site: string): string {
  return `site:${site}`;
}

export function siteFromKid(kid: string): string | undefined {
  return kid.startsWith('site:') ? kid.slice(5) : undefined;
}

export function encodeAck(ack: Ack, signer: Signer): Uint8Array {
  check(AckSchema, ack, 'ack');
  return sign1(encode(ack), signer);
}

export function encodeState(state: State, signer: Signer): Uint8Array {
  check(StateSchema, state, 'state');
  return sign1(encode(state), signer);
}

/** Looks up a site's uplink public key (from enrolment). */
export type SiteKeyLookup = (site: string) => Uint8Array | undefined;

function openUplink<T extends { site: string; v: number }>(
  bytes: Uint8Array,
  keyFor: SiteKeyLookup,
  topicSite: string | undefined,
  schema: typeof AckSchema | typeof StateSchema,
  what: string,
  impl?: Ed25519Impl,
): T {
  const parts = parseSign1(bytes, UPLINK_LIMITS);
  const site = siteFromKid(parts.kid);
  const pub = site ? keyFor(site) : undefined;
  if (!site || !pub) throw new ProtocolError('unknown-key', `no enrolled key for kid ${parts.kid}`);
  if (!verifySign1(parts, pub, impl))
    throw new ProtocolError('bad-signature', `${what} signature by ${parts.kid} does not verify`);
  const msg = check(schema, decode(parts.payload, UPLINK_LIMITS), what) as unknown as T;
  if (msg.v !== PROTOCOL_VERSION) throw new ProtocolError('unsupported-version', `protocol version ${msg.v}`);
  // The signed site is authoritative; the topic must agree with it ([TOP-3]).
  if (msg.site !== site || (topicSite !== undefined && topicSite !== site)) {
    throw new ProtocolError(
      'wrong-site',
      `${what} from ${site} names site ${msg.site} on topic of ${topicSite}`,
    );
  }
  return msg;
}

export function openAck(
  bytes: Uint8Array,
  keyFor: SiteKeyLookup,
  topicSite?: string,
  impl?: Ed25519Impl,
): Ack {
  return openUplink<Ack>(bytes, keyFor, topicSite, AckSchema, 'ack', impl);
}

export function openState(
  bytes: Uint8Array,
  keyFor: SiteKeyLookup,
  topicSite?: string,
  impl?: Ed25519Impl,
): State {
  return openUplink<State>(bytes, keyFor, topicSite, StateSchema, 'state', impl);
}

// ---- stack specs --------------------------------------------------------------------------------

// node:zlib is loaded on first use only: an agent inflates a spec only when the controller deflated it
// (`z`), and never deflates (memory budget, docs/adr/0006-agent-idle-memory.md).
let zlibModule: typeof import('node:zlib') | undefined;
function zlib(): typeof import('node:zlib') {
  zlibModule ??= createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib');
  return zlibModule;
}

export interface EncodedSpec {
  readonly bytes: Uint8Array;
  readonly z: boolean;
  /** sha256 of `bytes` exactly as carried ([PAY-SPEC-2]). */
  readonly digest: Uint8Array;
}

/** Encodes a spec; compresses with raw deflate when that is smaller (`compress: 'auto'`). */
export function encodeSpec(spec: StackSpec, compress: 'auto' | 'never' = 'auto'): EncodedSpec {
  check(StackSpecSchema, spec, 'stack spec');
  const plain = encode(spec);
  if (compress === 'auto') {
    const z = new Uint8Array(zlib().deflateRawSync(plain, { level: 9 }));
    if (z.length < plain.length) return { bytes: z, z: true, digest: sha256(z) };
  }
  return { bytes: plain, z: false, digest: sha256(plain) };
}

export function decodeSpec(bytes: Uint8Array, z: boolean, limits: ScanLimits = SPEC_LIMITS): StackSpec {
  let plain = bytes;
  if (z) {
    try {
      // maxOutputLength bounds a decompression bomb before it is inflated ([PAY-SPEC-3]).
      plain = new Uint8Array(zlib().inflateRawSync(bytes, { maxOutputLength: limits.maxBytes }));
    } catch (err) {
      const tooBig = (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE';
      throw new ProtocolError(
        tooBig ? 'too-large' : 'malformed',
        `spec inflate failed: ${(err as Error).message}`,
      );
    }
  }
  return check(StackSpecSchema, decode(plain, limits), 'stack spec');
}

const sortedObject = <V>(o: Record<string, V>): Record<string, V> =>
  Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** Canonical key order for a spec, so the same content encodes to the same bytes and digest. */
export function canonicalSpec(spec: StackSpec): StackSpec {
  const svc: Record<string, Service> = {};
  for (const [name, s] of Object.entries(sortedObject(spec.svc))) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(sortedObject(s as Record<string, unknown>))) {
      if (v === undefined) continue;
      out[k] =
        (k === 'env' || k === 'lbl') && v && typeof v === 'object'
          ? sortedObject(v as Record<string, string>)
          : v;
    }
    svc[name] = out as Service;
  }
  return spec.vol ? { svc, vol: [...spec.vol].sort() } : { svc };
}

export function isHostMount(vol: string): boolean {
  return vol.startsWith('/') || vol.startsWith('.') || vol.startsWith('~');
}

/** Why a spec is critical ([SEC-CRIT]): privileged, host network or host mounts. Empty when not. */
export function criticalReasons(spec: StackSpec): string[] {
  const out: string[] = [];
  for (const [name, s] of Object.entries(spec.svc)) {
    if (s.priv) out.push(`${name}: privileged`);
    if (s.net === 'host') out.push(`${name}: host network`);
    for (const v of s.vols ?? []) if (isHostMount(v)) out.push(`${name}: host mount ${v.split(':')[0]}`);
  }
  return out;
}

/** The Docker image reference for a service: by digest when pinned ([PAY-SPEC-4]). */
export function imageRef(s: Service): string {
  if (s.dig) return `${s.img}@sha256:${toHex(s.dig)}`;
  return `${s.img}:${s.tag ?? 'latest'}`;
}

// ---- approvals of critical changes --------------------------------------------------------------

export function removeDigest(stack: string): Uint8Array {
  return sha256(new TextEncoder().encode(`remove:${stack}`));
}

export function encodeApproval(a: Approval, signer: Signer): Uint8Array {
  check(ApprovalSchema, a, 'approval');
  return sign1(encode(a), signer);
}

/**
 * Counts distinct authorised approvers of a critical change ([SEC-CRIT-2]). Invalid approvals are
 * ignored (not fatal); the caller compares the count with the trust root's `crit` threshold.
 */
export function countApprovals(
  approvals: readonly Uint8Array[] | undefined,
  want: { stack: string; rev: number; digest: Uint8Array; site: string },
  trust: TrustStore,
  impl: Ed25519Impl = ed25519,
): number {
  const approvers = new Set<string>();
  const pubs = new Set<string>();
  for (const bytes of approvals ?? []) {
    try {
      const parts = parseSign1(bytes, { maxBytes: 512, maxDepth: 4, maxItems: 64 });
      const pub = trust.keyFor(parts.kid, 'approve');
      if (!pub || approvers.has(parts.kid) || pubs.has(toHex(pub))) continue;
      if (!verifySign1(parts, pub, impl)) continue;
      const a = check(
        ApprovalSchema,
        decode(parts.payload, { maxBytes: 512, maxDepth: 4, maxItems: 64 }),
        'approval',
      );
      if (a.stack !== want.stack || a.rev !== want.rev || toHex(a.dig) !== toHex(want.digest)) continue;
      if (a.sites && !a.sites.includes(want.site)) continue;
      approvers.add(parts.kid);
      pubs.add(toHex(pub));
    } catch {
      // An unreadable approval counts for nothing.
    }
  }
  return approvers.size;
}

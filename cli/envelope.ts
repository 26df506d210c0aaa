/**
 * `outpost envelope inspect|sign`: offline tools for captured envelopes (SPEC [ENV-*]).
 *
 *   inspect  decodes a COSE_Sign1 (command, ack, state, approval) or a COSE_Sign trust root given as raw
 *            bytes, hex or base64 (auto-detected) and prints JSON; with --key or --trust it verifies it
 *            through the same `open*` functions the agent and controller use.
 *   sign     builds, validates and signs a command envelope with a PKCS#8 PEM Ed25519 key.
 *
 * JSON convention (both directions): a CBOR byte string is `{"$hex": "..."}` (sign also accepts
 * `{"$b64": "..."}`), so `inspect` output can be fed back to `sign`.
 *
 * Exit codes (EXIT_CODES): 0 valid / decoded, 64 usage, 65 malformed, too-large, unknown-type,
 * unsupported-version, 66 bad-signature, unknown-key, trust-threshold, 67 expired, not-yet-valid,
 * 68 wrong-site, 1 anything else (I/O errors, trust-version, ...).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  COMMAND_LIMITS,
  type Command,
  createSigner,
  decode,
  decodeSpec,
  encodeCommand,
  encodeSpec,
  envelopeRef,
  KEY_SCOPES,
  openAck,
  openCommand,
  openState,
  openTrustRoot,
  PROTOCOL_VERSION,
  ProtocolError,
  parseSign,
  parseSign1,
  privateKeyFromPem,
  publicKeyFromPem,
  type ReasonCode,
  type StackSpec,
  type TrustRoot,
  TrustStore,
  toHex,
  verifyMultiSignature,
  verifySign1,
} from '../protocol/src/index.js';

export const EXIT_CODES = { ok: 0, other: 1, usage: 64, data: 65, key: 66, time: 67, site: 68 } as const;

/** The documented exit code for a rejection reason. */
export function exitCodeFor(code: ReasonCode): number {
  switch (code) {
    case 'malformed':
    case 'too-large':
    case 'unknown-type':
    case 'unsupported-version':
      return EXIT_CODES.data;
    case 'bad-signature':
    case 'unknown-key':
    case 'trust-threshold':
      return EXIT_CODES.key;
    case 'expired':
    case 'not-yet-valid':
      return EXIT_CODES.time;
    case 'wrong-site':
      return EXIT_CODES.site;
    default:
      return EXIT_CODES.other;
  }
}

/** Largest input `inspect` reads (hex doubles the size of the largest envelope). */
export const MAX_INPUT_BYTES = 1024 * 1024;

// ---- JSON <-> wire values ---------------------------------------------------------------------

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Wire value -> JSON: byte strings become {"$hex"}, bigints {"$bigint"}, non-finite floats {"$float"}. */
export function toJson(v: unknown): Json {
  if (v instanceof Uint8Array) return { $hex: toHex(v) };
  if (typeof v === 'bigint') return { $bigint: v.toString() };
  if (typeof v === 'number') return Number.isFinite(v) ? v : { $float: String(v) };
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (Array.isArray(v)) return v.map(toJson);
  const entries = v instanceof Map ? [...v.entries()] : Object.entries(v as object);
  const out: { [key: string]: Json } = {};
  for (const [k, x] of entries) Object.defineProperty(out, String(k), { value: toJson(x), enumerable: true });
  return out;
}

const HEX = /^(?:[0-9a-fA-F]{2})*$/;
const B64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** JSON -> wire value: {"$hex": "..."} and {"$b64": "..."} become byte strings. Throws ProtocolError. */
export function fromJson(v: unknown, path = '$'): unknown {
  if (Array.isArray(v)) return v.map((x, i) => fromJson(x, `${path}[${i}]`));
  if (v === null || typeof v !== 'object') return v;
  const keys = Object.keys(v);
  const o = v as Record<string, unknown>;
  if (keys.length === 1 && (keys[0] === '$hex' || keys[0] === '$b64')) {
    const s = o[keys[0]];
    if (typeof s !== 'string' || !(keys[0] === '$hex' ? HEX : B64).test(s)) {
      throw new ProtocolError('malformed', `${path}: invalid ${keys[0]} string`);
    }
    return new Uint8Array(Buffer.from(s, keys[0] === '$hex' ? 'hex' : 'base64'));
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    if (k === '__proto__') throw new ProtocolError('malformed', `${path}: forbidden key __proto__`);
    out[k] = fromJson(o[k], `${path}.${k}`);
  }
  return out;
}

/** Raw bytes, or hex / base64 text (whitespace ignored). Raw COSE always starts with a non-ASCII tag byte. */
export function detectEncoding(input: Uint8Array): { bytes: Uint8Array; encoding: 'raw' | 'hex' | 'base64' } {
  const printable =
    input.length > 0 && input.every((b) => (b >= 0x20 && b < 0x7f) || b === 9 || b === 10 || b === 13);
  if (!printable) return { bytes: input, encoding: 'raw' };
  const text = Buffer.from(input).toString('latin1').replace(/\s+/g, '');
  if (text.length > 0 && HEX.test(text))
    return { bytes: new Uint8Array(Buffer.from(text, 'hex')), encoding: 'hex' };
  if (text.length > 0 && B64.test(text)) {
    return { bytes: new Uint8Array(Buffer.from(text, 'base64')), encoding: 'base64' };
  }
  throw new ProtocolError('malformed', 'input is neither CBOR nor hex nor base64');
}

// ---- helpers ----------------------------------------------------------------------------------

class UsageError extends Error {}

function readInput(file: string | undefined): Uint8Array {
  const fd = file === undefined || file === '-' ? 0 : file;
  const tooLarge = (n: number) =>
    new ProtocolError('too-large', `input of ${n} bytes exceeds ${MAX_INPUT_BYTES}`);
  // A regular file's size is checked before it is read; stdin is judged once read.
  if (fd !== 0 && statSync(fd).size > MAX_INPUT_BYTES) throw tooLarge(statSync(fd).size);
  const buf = readFileSync(fd);
  if (buf.length > MAX_INPUT_BYTES) throw tooLarge(buf.length);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function parseUint(name: string, s: string): number {
  if (!/^\d{1,16}$/.test(s) || !Number.isSafeInteger(Number(s)))
    throw new UsageError(`--${name} must be an integer`);
  return Number(s);
}

/** `90`, `30s`, `15m`, `1h`, `7d` -> seconds. */
export function parseDuration(s: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(s);
  if (!m) throw new UsageError(`invalid duration ${JSON.stringify(s)} (use e.g. 30s, 15m, 1h, 7d)`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

function nowSec(): number {
  return Math.floor(Date.now() / 1000);
}

function rejection(err: unknown): { reason: ReasonCode; error: string } {
  if (err instanceof ProtocolError) return { reason: err.code, error: err.message };
  throw err;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function classify(p: unknown): 'command' | 'ack' | 'state' | 'approval' | 'unknown' {
  if (!isObject(p)) return 'unknown';
  if ('type' in p && 'body' in p) return 'command';
  if ('useq' in p && 'st' in p) return 'ack';
  if ('useq' in p && 'stacks' in p) return 'state';
  if ('dig' in p && 'stack' in p) return 'approval';
  return 'unknown';
}

// ---- inspect ----------------------------------------------------------------------------------

const INSPECT_HELP = `usage: outpost envelope inspect [--key PUBLIC_KEY_PEM | --trust TRUST_ROOT_FILE] [--site ID]
                               [--now UNIX | --no-expiry] [FILE|-]

Decodes a captured envelope (raw CBOR, hex or base64; FILE or '-' / nothing for stdin): a command,
ack, state or approval (COSE_Sign1) or a trust root (COSE_Sign), and prints JSON: the protected
header, kid, payload (byte strings as {"$hex": ...}), and for stack.apply the decoded spec.

  --key FILE     verify the signature with this Ed25519 public key (SPKI PEM; a PKCS#8 key works too).
                 Commands then get every openCommand check except key scope; acks and state get
                 openAck/openState; a trust root is valid when a signature by this key verifies.
  --trust FILE   verify a command or approval against this trust root (full openCommand checks
                 incl. key scope), or a trust root as the rotation that follows it.
  --site ID      also reject an envelope for another site (wrong-site).
  --now UNIX     judge expiry at this time instead of the current time.
  --no-expiry    do not judge expiry.

Prints {"valid": true|false, "reason": code} when verifying. Exit codes: 0 valid (or decoded when
not verifying), 64 usage, 65 malformed/too-large/unknown-type/unsupported-version,
66 bad-signature/unknown-key/trust-threshold, 67 expired/not-yet-valid, 68 wrong-site, 1 other.
`;

interface InspectOpts {
  key?: Uint8Array;
  trust?: TrustRoot;
  site?: string;
  now?: number;
}

type Report = Record<string, Json | undefined>;

function inspectSign1(bytes: Uint8Array, o: InspectOpts, out: Report): void {
  const parts = parseSign1(bytes, COMMAND_LIMITS);
  out.protected = { alg: -8, kid: parts.kid };
  out.kid = parts.kid;
  out.protectedHex = toHex(parts.protectedBytes);
  out.signature = toHex(parts.signature);
  const payload = decode(parts.payload, COMMAND_LIMITS);
  const kind = classify(payload);
  out.kind = kind;
  out.payload = toJson(payload);
  if (kind === 'command' && isObject(payload) && payload.type === 'stack.apply' && isObject(payload.body)) {
    const { spec, z } = payload.body;
    if (spec instanceof Uint8Array) {
      try {
        out.spec = toJson(decodeSpec(spec, z === true));
      } catch (err) {
        out.specError = rejection(err);
      }
    }
  }
  if (!o.key && !o.trust) return;
  const site = o.site ?? (isObject(payload) && typeof payload.site === 'string' ? payload.site : '');
  if (kind === 'ack' || kind === 'state') {
    if (!o.key) throw new UsageError(`--trust does not cover ${kind} messages (site keys): use --key`);
    const pub = o.key;
    (kind === 'ack' ? openAck : openState)(bytes, () => pub, o.site);
    return;
  }
  const trust = o.trust
    ? new TrustStore(o.trust)
    : new TrustStore({
        v: 1,
        ver: 1,
        iat: 0,
        roots: [{ kid: parts.kid === 'r' ? 's' : 'r', pub: o.key! }],
        thr: 1,
        keys: [{ kid: parts.kid, pub: o.key!, types: [...KEY_SCOPES] }],
        crit: 1,
      });
  if (kind === 'command') {
    const iat = isObject(payload) && typeof payload.iat === 'number' ? payload.iat : 0;
    openCommand(bytes, { site, trust, nowSec: o.now ?? iat });
    return;
  }
  const pub = kind === 'approval' ? trust.keyFor(parts.kid, 'approve') : trust.anyKey(parts.kid);
  if (!pub) throw new ProtocolError('unknown-key', `kid ${parts.kid} may not sign ${kind} messages`);
  if (!verifySign1(parts, pub))
    throw new ProtocolError('bad-signature', `signature by ${parts.kid} does not verify`);
}

function inspectTrustRoot(bytes: Uint8Array, o: InspectOpts, out: Report): void {
  out.kind = 'trust-root';
  const parts = parseSign(bytes, COMMAND_LIMITS);
  out.payload = toJson(decode(parts.payload, COMMAND_LIMITS));
  out.signatures = parts.signatures.map((s) => ({
    kid: s.kid,
    protectedHex: toHex(s.protectedBytes),
    signature: toHex(s.signature),
  }));
  try {
    openTrustRoot(bytes);
    out.selfSigned = true;
  } catch {
    out.selfSigned = false;
  }
  if (o.trust) {
    openTrustRoot(bytes, { current: o.trust, ...(o.now !== undefined ? { now: o.now } : {}) });
  } else if (o.key) {
    const pub = o.key;
    if (!parts.signatures.some((s) => verifyMultiSignature(parts, s, pub))) {
      throw new ProtocolError('bad-signature', 'no signature by this key verifies');
    }
  }
}

async function inspect(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      trust: { type: 'string' },
      site: { type: 'string' },
      now: { type: 'string' },
      'no-expiry': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(INSPECT_HELP);
    return EXIT_CODES.ok;
  }
  if (positionals.length > 1) throw new UsageError('at most one input file');
  if (values.key && values.trust) throw new UsageError('--key and --trust are exclusive');
  if (values.now && values['no-expiry']) throw new UsageError('--now and --no-expiry are exclusive');
  const now = values['no-expiry'] ? undefined : values.now ? parseUint('now', values.now) : nowSec();
  const o: InspectOpts = {
    ...(values.key ? { key: publicKeyFromPem(readFileSync(values.key, 'utf8')) } : {}),
    ...(values.trust
      ? {
          trust: openTrustRoot(
            detectEncoding(readInput(values.trust)).bytes,
            now === undefined ? {} : { now },
          ),
        }
      : {}),
    ...(values.site ? { site: values.site } : {}),
    ...(now !== undefined ? { now } : {}),
  };
  const verifying = o.key !== undefined || o.trust !== undefined;
  const out: Report = { kind: null };
  let failure: { reason: ReasonCode; error: string } | undefined;
  try {
    const { bytes, encoding } = detectEncoding(readInput(positionals[0]));
    out.encoding = encoding;
    out.size = bytes.length;
    out.envelopeRef = toHex(envelopeRef(bytes));
    if (bytes[0] === 0xd8 && bytes[1] === 0x62) inspectTrustRoot(bytes, o, out);
    else inspectSign1(bytes, o, out);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    failure = rejection(err);
  }
  if (verifying || failure) {
    out.valid = failure === undefined;
    if (failure) Object.assign(out, failure);
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  if (!failure) return EXIT_CODES.ok;
  process.stderr.write(`outpost envelope inspect: ${failure.error}\n`);
  return exitCodeFor(failure.reason);
}

// ---- sign -------------------------------------------------------------------------------------

const SIGN_HELP = `usage: outpost envelope sign --key PRIVATE_KEY_PEM --kid KID --site ID --type TYPE --seq N
                            [--prev N] [--body JSON|@FILE] [--expires-in 1h] [--iat UNIX] [--id HEX32]
                            [--no-deflate] [--out FILE]

Builds a command envelope (COSE_Sign1, EdDSA), validates it against the protocol schemas and signs it
with a PKCS#8 PEM Ed25519 key (as openssl genpkey -algorithm ed25519 or outpost certs write it).
Writes raw bytes to --out, or hex to stdout.

  --type         stack.apply | stack.remove | stack.restart | state.request | heartbeat | trust.update
  --body         the command body as JSON (default {}), or @file. Byte strings: {"$hex": ".."} or
                 {"$b64": ".."}. For stack.apply, "spec" may be a JSON stack spec (digests as
                 {"$hex": ".."}): it is encoded with encodeSpec (deflated when smaller, unless
                 --no-deflate) and "z" is set accordingly; or the already-encoded bytes.
  --prev         seq of the command published to the site just before this one (default seq - 1)
  --expires-in   lifetime: seconds or 30s / 15m / 1h / 7d (default 1h)
  --iat          issued-at, Unix seconds (default now)
  --id           16-byte command id as 32 hex digits (default random)

Exit codes: 0 signed, 64 usage, 65 invalid body or command, 1 other (I/O).
`;

function buildBody(type: string, body: unknown, deflate: boolean): unknown {
  if (type !== 'stack.apply' || !isObject(body) || !isObject(body.spec)) return body;
  const enc = encodeSpec(body.spec as unknown as StackSpec, deflate ? 'auto' : 'never');
  const { z: _z, ...rest } = body;
  return { ...rest, spec: enc.bytes, ...(enc.z ? { z: true } : {}) };
}

async function sign(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      key: { type: 'string' },
      kid: { type: 'string' },
      site: { type: 'string' },
      type: { type: 'string' },
      body: { type: 'string', default: '{}' },
      seq: { type: 'string' },
      prev: { type: 'string' },
      'expires-in': { type: 'string', default: '1h' },
      iat: { type: 'string' },
      id: { type: 'string' },
      'no-deflate': { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(SIGN_HELP);
    return EXIT_CODES.ok;
  }
  for (const name of ['key', 'kid', 'site', 'type', 'seq'] as const) {
    if (values[name] === undefined) throw new UsageError(`--${name} is required`);
  }
  if (values.id !== undefined && !/^[0-9a-fA-F]{32}$/.test(values.id)) {
    throw new UsageError('--id must be 32 hex digits');
  }
  const iat = values.iat !== undefined ? parseUint('iat', values.iat) : nowSec();
  const exp = iat + parseDuration(values['expires-in']);
  const seq = parseUint('seq', values.seq!);
  const prev = values.prev !== undefined ? parseUint('prev', values.prev) : Math.max(seq - 1, 0);
  const bodyText = values.body.startsWith('@') ? readFileSync(values.body.slice(1), 'utf8') : values.body;
  let bodyJson: unknown;
  try {
    bodyJson = JSON.parse(bodyText);
  } catch (err) {
    throw new ProtocolError('malformed', `--body is not JSON: ${(err as Error).message}`);
  }
  const { seed } = privateKeyFromPem(readFileSync(values.key!, 'utf8'));
  const signer = createSigner(values.kid!, seed);
  const cmd = {
    v: PROTOCOL_VERSION,
    site: values.site!,
    seq,
    prev,
    id:
      values.id !== undefined
        ? new Uint8Array(Buffer.from(values.id, 'hex'))
        : new Uint8Array(randomBytes(16)),
    iat,
    exp,
    type: values.type!,
    body: buildBody(values.type!, fromJson(bodyJson, 'body'), !values['no-deflate']),
  } as Command;
  const bytes = encodeCommand(cmd, signer);
  if (values.out !== undefined) writeFileSync(values.out, bytes);
  else process.stdout.write(`${toHex(bytes)}\n`);
  return EXIT_CODES.ok;
}

// ---- entry ------------------------------------------------------------------------------------

const HELP = `usage: outpost envelope <inspect|sign> [options]

  inspect   decode (and with --key/--trust verify) a captured envelope or trust root
  sign      build and sign a command envelope offline

'outpost envelope <inspect|sign> --help' for details.
`;

export async function run(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const tag = `outpost envelope${sub === 'inspect' || sub === 'sign' ? ` ${sub}` : ''}`;
  try {
    if (sub === 'inspect') return await inspect(rest);
    if (sub === 'sign') return await sign(rest);
    if (sub === '--help' || sub === '-h' || sub === 'help') {
      process.stdout.write(HELP);
      return EXIT_CODES.ok;
    }
    process.stderr.write(sub ? `${tag}: unknown subcommand '${sub}'\n\n${HELP}` : HELP);
    return EXIT_CODES.usage;
  } catch (err) {
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`${tag}: ${(err as Error).message}\n`);
      return EXIT_CODES.usage;
    }
    if (err instanceof ProtocolError) {
      process.stderr.write(`${tag}: ${err.message}\n`);
      return exitCodeFor(err.code);
    }
    process.stderr.write(`${tag}: ${(err as Error).message ?? String(err)}\n`);
    return EXIT_CODES.other;
  }
}

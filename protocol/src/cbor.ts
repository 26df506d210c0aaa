/**
 * Strict CBOR for the wire (SPEC [CBOR-1]..[CBOR-9]).
 *
 * Decoding is two passes over the exact received bytes:
 *  1. `scan()` — our own single-pass well-formedness check with hard limits. It never allocates in
 *     proportion to a declared length (every length is checked against the bytes that remain first),
 *     rejects indefinite lengths, reserved additional-info values, undefined/simple values, unknown
 *     tags, duplicate or non-text/int map keys, `__proto__` keys, invalid UTF-8, excess depth or item
 *     counts and trailing bytes.
 *  2. cbor-x builds the JavaScript values from bytes that have already passed the scan, with records,
 *     structured clone, tag 259 and typed-array tags switched off.
 *
 * Encoding uses cbor-x with the same extensions off, so what we send is plain RFC 8949 CBOR that any
 * decoder reads. Encoding is not canonical: we always sign the exact bytes we send.
 */
import { Decoder, Encoder } from 'cbor-x';
import { ProtocolError } from './reasons.js';

export interface ScanLimits {
  /** Reject inputs longer than this before looking at a single byte. */
  readonly maxBytes: number;
  /** Maximum nesting of arrays, maps and tags. */
  readonly maxDepth: number;
  /** Maximum number of data items in total (a map entry counts as two). */
  readonly maxItems: number;
  /** The only tag accepted, and only as the outermost item (e.g. 18 for COSE_Sign1). */
  readonly rootTag?: number;
}

export const DEFAULT_LIMITS: ScanLimits = Object.freeze({
  maxBytes: 256 * 1024,
  maxDepth: 16,
  maxItems: 20_000,
});

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Offsets of one data item inside a buffer. */
export interface ItemSpan {
  readonly start: number;
  readonly end: number;
}

class Scanner {
  private pos = 0;
  private items = 0;

  constructor(
    private readonly buf: Uint8Array,
    private readonly limits: ScanLimits,
    /** Integer keys collide with their decimal text form (decoding to plain objects does that). */
    private readonly keysAsProperties = false,
  ) {}

  private fail(detail: string): never {
    throw new ProtocolError('malformed', `CBOR ${detail} at byte ${this.pos}`);
  }

  private need(n: number): void {
    if (n > this.buf.length - this.pos) this.fail('truncated');
  }

  /** Reads the argument of the head whose additional info is `ai`. Returns a bigint only above 2^53. */
  private argument(ai: number): number | bigint {
    if (ai < 24) return ai;
    const b = this.buf;
    switch (ai) {
      case 24:
        this.need(1);
        return b[this.pos++]!;
      case 25: {
        this.need(2);
        const v = (b[this.pos]! << 8) | b[this.pos + 1]!;
        this.pos += 2;
        return v;
      }
      case 26: {
        this.need(4);
        const v =
          ((b[this.pos]! << 24) >>> 0) +
          ((b[this.pos + 1]! << 16) | (b[this.pos + 2]! << 8) | b[this.pos + 3]!);
        this.pos += 4;
        return v;
      }
      case 27: {
        this.need(8);
        let v = 0n;
        for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(b[this.pos + i]!);
        this.pos += 8;
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case 31:
        return this.fail('indefinite length');
      default:
        return this.fail(`reserved additional info ${ai}`);
    }
  }

  private length(ai: number): number {
    const n = this.argument(ai);
    // Any length that does not fit in the remaining bytes is malformed; checking here means a
    // declared 2^64 length never reaches an allocator.
    if (typeof n === 'bigint' || n > this.buf.length - this.pos) this.fail('length exceeds input');
    return n;
  }

  private count(n = 1): void {
    this.items += n;
    if (this.items > this.limits.maxItems) this.fail('too many items');
  }

  /** Scans one item. Returns the map-key identity when `asKey` is set. */
  item(depth: number, asKey = false): string | undefined {
    if (depth > this.limits.maxDepth) this.fail('nesting too deep');
    this.count();
    this.need(1);
    const start = this.pos;
    const ib = this.buf[this.pos++]!;
    const major = ib >> 5;
    const ai = ib & 0x1f;
    switch (major) {
      case 0:
      case 1: {
        const v = this.argument(ai);
        if (asKey) return `${this.keysAsProperties ? 's' : 'i'}:${major === 0 ? BigInt(v) : -1n - BigInt(v)}`;
        return undefined;
      }
      case 2: {
        const n = this.length(ai);
        this.pos += n;
        if (asKey) this.fail('byte-string map key');
        return undefined;
      }
      case 3: {
        const n = this.length(ai);
        let s: string;
        try {
          s = utf8.decode(this.buf.subarray(this.pos, this.pos + n));
        } catch {
          this.pos = start;
          return this.fail('invalid UTF-8');
        }
        this.pos += n;
        if (asKey) {
          if (s === '__proto__') this.fail('forbidden key __proto__');
          return `s:${s}`;
        }
        return undefined;
      }
      case 4: {
        if (asKey) this.fail('array map key');
        const n = this.length(ai); // each element is at least one byte
        for (let i = 0; i < n; i++) this.item(depth + 1);
        return undefined;
      }
      case 5: {
        if (asKey) this.fail('map map key');
        const n = this.argument(ai);
        if (typeof n === 'bigint' || n * 2 > this.buf.length - this.pos) this.fail('length exceeds input');
        const seen = new Set<string>();
        for (let i = 0; i < n; i++) {
          const key = this.item(depth + 1, true)!;
          if (seen.has(key)) this.fail(`duplicate map key ${key.slice(2)}`);
          seen.add(key);
          this.item(depth + 1);
        }
        return undefined;
      }
      case 6: {
        const tag = this.argument(ai);
        if (asKey || depth !== 0 || this.limits.rootTag === undefined || tag !== this.limits.rootTag) {
          this.fail(`unexpected tag ${tag}`);
        }
        this.item(depth + 1);
        return undefined;
      }
      default: {
        // major 7
        if (ai === 20 || ai === 21 || ai === 22) {
          if (asKey) this.fail('simple-value map key');
          return undefined;
        }
        if (ai === 25 || ai === 26 || ai === 27) {
          if (asKey) this.fail('float map key');
          this.need(ai === 25 ? 2 : ai === 26 ? 4 : 8);
          this.pos += ai === 25 ? 2 : ai === 26 ? 4 : 8;
          return undefined;
        }
        if (ai === 31) return this.fail('unexpected break');
        return this.fail(`unsupported simple value ${ai === 24 ? 'simple(n)' : ai}`);
      }
    }
  }

  finish(): void {
    if (this.pos !== this.buf.length) this.fail('trailing bytes');
  }

  get offset(): number {
    return this.pos;
  }

  /** Scans the array header of a root tagged array and returns the spans of its elements. */
  taggedArray(tag: number, len: number): ItemSpan[] {
    this.need(1);
    const ib = this.buf[this.pos++]!;
    if (ib >> 5 !== 6 || this.argument(ib & 0x1f) !== tag) this.fail(`expected tag ${tag}`);
    this.need(1);
    const ab = this.buf[this.pos++]!;
    if (ab >> 5 !== 4 || this.argument(ab & 0x1f) !== len) this.fail(`expected array of ${len}`);
    this.count(2);
    const spans: ItemSpan[] = [];
    for (let i = 0; i < len; i++) {
      const start = this.pos;
      this.item(2);
      spans.push({ start, end: this.pos });
    }
    return spans;
  }
}

function checkSize(buf: Uint8Array, limits: ScanLimits): void {
  if (!(buf instanceof Uint8Array)) throw new ProtocolError('malformed', 'input is not bytes');
  if (buf.length > limits.maxBytes) {
    throw new ProtocolError('too-large', `input of ${buf.length} bytes exceeds ${limits.maxBytes}`);
  }
  if (buf.length === 0) throw new ProtocolError('malformed', 'empty input');
}

/** Validates that `buf` is exactly one well-formed data item within `limits`. Throws ProtocolError. */
export function scan(buf: Uint8Array, limits: ScanLimits = DEFAULT_LIMITS, keysAsProperties = false): void {
  checkSize(buf, limits);
  const s = new Scanner(buf, limits, keysAsProperties);
  s.item(0);
  s.finish();
}

/**
 * Validates a root `tag(array(len))` and returns the byte spans of the array's elements, so callers
 * can verify signatures over the exact bytes received.
 */
export function scanTaggedArray(buf: Uint8Array, tag: number, len: number, limits: ScanLimits): ItemSpan[] {
  checkSize(buf, limits);
  const s = new Scanner(buf, { ...limits, rootTag: tag });
  const spans = s.taggedArray(tag, len);
  s.finish();
  return spans;
}

// Options cbor-x supports but its typings omit are passed through a variable.
const encoderOptions = {
  useRecords: false,
  mapsAsObjects: true,
  useTag259ForMaps: false,
  variableMapSize: true,
  tagUint8Array: false,
  structuredClone: false,
  pack: false,
};
const encoder = new Encoder(encoderOptions);

const objectDecoderOptions = {
  useRecords: false,
  mapsAsObjects: true,
  structuredClone: false,
  int64AsNumber: false,
};
const objectDecoder = new Decoder(objectDecoderOptions);

const mapDecoderOptions = {
  useRecords: false,
  mapsAsObjects: false,
  structuredClone: false,
  int64AsNumber: false,
};
const mapDecoder = new Decoder(mapDecoderOptions);

/** Encodes plain data (objects, arrays, strings, numbers, booleans, null, Uint8Array) as CBOR. */
export function encode(value: unknown): Uint8Array {
  const out = encoder.encode(value);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function normalise(value: unknown): unknown {
  // cbor-x returns every 8-byte-head integer as a bigint; other encoders (cborg, Go) write integers of
  // 2^32..2^53 that way, so keep those as numbers and only larger ones as bigint.
  if (typeof value === 'bigint') return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value;
  // cbor-x hands back Buffers in Node; expose plain Uint8Array views so callers see one type.
  if (value instanceof Uint8Array) {
    return Buffer.isBuffer(value) ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = normalise(value[i]);
    return value;
  }
  if (value instanceof Map) {
    for (const [k, v] of value) value.set(k, normalise(v));
    return value;
  }
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    for (const k of Object.keys(obj)) obj[k] = normalise(obj[k]);
  }
  return value;
}

/**
 * Strictly decodes one CBOR item whose maps have text keys into plain objects.
 * Integer map keys become their decimal strings; use `decodeMaps` where integer keys matter.
 */
export function decode(buf: Uint8Array, limits: ScanLimits = DEFAULT_LIMITS): unknown {
  // `{1: x, "1": y}` would silently become one property: reject it as a duplicate key ([CBOR-6]).
  scan(buf, limits, true);
  try {
    return normalise(objectDecoder.decode(buf));
  } catch (err) {
    throw new ProtocolError('malformed', `CBOR decode failed: ${(err as Error).message}`);
  }
}

/** Strictly decodes one CBOR item, keeping maps as `Map` (for COSE headers with integer labels). */
export function decodeMaps(buf: Uint8Array, limits: ScanLimits = DEFAULT_LIMITS): unknown {
  scan(buf, limits);
  try {
    return normalise(mapDecoder.decode(buf));
  } catch (err) {
    throw new ProtocolError('malformed', `CBOR decode failed: ${(err as Error).message}`);
  }
}

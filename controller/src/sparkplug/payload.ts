/**
 * A small typed wrapper around the `sparkplug-payload` package (Eclipse Tahu's JavaScript codec for
 * Sparkplug B protobuf payloads). The package is CommonJS; it is loaded with `createRequire` and
 * described here by the few interfaces Outpost uses, so nothing else depends on its own typings
 * (which pull in protobufjs 6 and `long`).
 *
 * Decoded 64-bit integers may come back as `Long` objects; `toNumber` turns them into numbers.
 */
import { createRequire } from 'node:module';

/** Sparkplug B datatypes Outpost publishes (Sparkplug 3.0 §6.4.16, basic types). */
export type SparkplugType =
  | 'Int8'
  | 'Int16'
  | 'Int32'
  | 'Int64'
  | 'UInt8'
  | 'UInt16'
  | 'UInt32'
  | 'UInt64'
  | 'Float'
  | 'Double'
  | 'Boolean'
  | 'String'
  | 'DateTime'
  | 'Text';

export type MetricValue = number | boolean | string | null;

export interface OutMetric {
  /** Present in births (with the alias); omitted in DATA messages, which carry the alias only. */
  readonly name?: string;
  readonly alias?: number;
  /** Milliseconds since the epoch (UTC). */
  readonly timestamp?: number;
  readonly type: SparkplugType;
  /** `null` is encoded as `is_null = true`. */
  readonly value: MetricValue;
}

export interface OutPayload {
  readonly timestamp: number;
  /** 0..255; absent only in NDEATH. */
  readonly seq?: number;
  readonly metrics: readonly OutMetric[];
}

/** What the package's decoder returns (only the fields read here). */
export interface InMetric {
  readonly name?: string;
  readonly alias?: unknown;
  readonly type?: string;
  readonly value?: unknown;
}

export interface InPayload {
  readonly timestamp?: unknown;
  readonly seq?: unknown;
  readonly metrics?: readonly InMetric[];
}

interface Codec {
  encodePayload(payload: {
    timestamp: number;
    seq?: number;
    metrics: { name?: string; alias?: number; timestamp?: number; type: string; value: MetricValue }[];
  }): Uint8Array;
  decodePayload(bytes: Uint8Array): InPayload;
}

const requireHere = createRequire(import.meta.url);
let codec: Codec | undefined;

function load(): Codec {
  if (!codec) {
    const mod = requireHere('sparkplug-payload') as { get(namespace: string): Codec | null };
    const c = mod.get('spBv1.0');
    if (!c) throw new Error('sparkplug-payload has no spBv1.0 codec');
    codec = c;
  }
  return codec;
}

export function encodePayload(p: OutPayload): Uint8Array {
  return load().encodePayload({
    timestamp: p.timestamp,
    ...(p.seq === undefined ? {} : { seq: p.seq }),
    metrics: p.metrics.map((m) => ({
      ...(m.name === undefined ? {} : { name: m.name }),
      ...(m.alias === undefined ? {} : { alias: m.alias }),
      ...(m.timestamp === undefined ? {} : { timestamp: m.timestamp }),
      type: m.type,
      value: m.value,
    })),
  });
}

/** Decodes a payload (NCMD); throws on bytes that are not a Sparkplug B payload. */
export function decodePayload(bytes: Uint8Array): InPayload {
  return load().decodePayload(bytes);
}

/** A number from a decoded integer (number, bigint or protobufjs `Long`); undefined otherwise. */
export function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof v === 'object' && 'toNumber' in v && typeof v.toNumber === 'function') {
    const n: unknown = v.toNumber();
    return typeof n === 'number' ? n : undefined;
  }
  return undefined;
}

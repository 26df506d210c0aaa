/**
 * How a packet is stored in a row: the payload in its own BLOB column (so it is never copied
 * through a serializer and its size is known), every other own property through the V8
 * structured-clone serializer (`node:v8`), which keeps `undefined` values, Buffers inside MQTT 5
 * `properties`, and property types exactly as aedes left them.
 */
import { deserialize, serialize } from 'node:v8';
import type { PacketLike } from './types.js';

export interface EncodedPacket {
  /** Every own enumerable property except `payload` and functions, V8-serialized. */
  meta: Buffer;
  /** The payload bytes, or null if the packet has none (PUBREL). */
  payload: Buffer | null;
  /** 1 if the payload was a string and must be given back as one. */
  payloadText: 0 | 1;
  /** Topic + payload bytes: what queue caps and stats count. */
  bytes: number;
}

const EMPTY = Buffer.alloc(0);

function payloadBuffer(payload: unknown): { payload: Buffer | null; payloadText: 0 | 1 } {
  if (payload === undefined || payload === null) return { payload: null, payloadText: 0 };
  if (typeof payload === 'string') return { payload: Buffer.from(payload, 'utf8'), payloadText: 1 };
  if (Buffer.isBuffer(payload)) return { payload, payloadText: 0 };
  if (payload instanceof Uint8Array) {
    return { payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), payloadText: 0 };
  }
  throw new TypeError('packet payload must be a Buffer, Uint8Array or string');
}

export function encodePacket(packet: PacketLike): EncodedPacket {
  const rest: Record<string, unknown> = {};
  for (const key of Object.keys(packet)) {
    if (key === 'payload') continue;
    const value = packet[key];
    if (typeof value === 'function') continue; // e.g. QoSPacket.writeCallback
    rest[key] = value;
  }
  const { payload, payloadText } = payloadBuffer(packet.payload);
  const topicBytes = typeof packet.topic === 'string' ? Buffer.byteLength(packet.topic) : 0;
  return { meta: serialize(rest), payload, payloadText, bytes: topicBytes + (payload?.length ?? 0) };
}

export function decodePacket(meta: Buffer, payload: Buffer | null, payloadText: number): PacketLike {
  const packet = deserialize(meta) as PacketLike;
  if (payload !== null) packet.payload = payloadText === 1 ? payload.toString('utf8') : payload;
  return packet;
}

const CARRIED = ['clientId', 'nl', 'properties', 'messageExpiry'] as const;

/**
 * The shape aedes gives a packet when it wraps it (`new Packet(original)` from aedes-packet,
 * without a broker): only the publish fields survive, and the packet identifier of a QoS > 0
 * PUBLISH is cleared because the broker assigns its own on delivery [MQTT-2.3.1-1]. Stored
 * outgoing and incoming packets are normalised to it, as the in-memory persistence does.
 */
export function aedesShape(original: PacketLike): PacketLike {
  const p: PacketLike = {};
  const carried: Record<string, unknown> = p;
  for (const key of CARRIED) if (Object.hasOwn(original, key)) carried[key] = original[key];
  p.cmd = original.cmd || 'publish';
  p.brokerId = original.brokerId;
  p.brokerCounter = original.brokerCounter || 0;
  p.topic = original.topic;
  p.payload = original.payload || EMPTY;
  p.qos = original.qos || 0;
  p.retain = original.retain || false;
  p.dup = original.dup || false;
  if (p.qos > 0 || p.cmd !== 'publish') p.messageId = undefined;
  return p;
}

/**
 * How a packet is stored in a row: the payload in its own BLOB column (so it is never copied
 * through a serializer and its size is known), every other own property in `meta`, in one of two
 * formats told apart by the first byte:
 *
 * - compact (`0x01`), for the packet shape aedes gives a queued PUBLISH (see `aedesShape`) and
 *   nothing else: exactly the properties `cmd` ('publish'), `brokerId` (string or undefined),
 *   `brokerCounter`, `topic`, `payload`, `qos`, `retain`, `dup` and optionally `messageId`
 *   (undefined or a packet identifier), in that order. Layout: tag, flags (bits 0–1 qos, 2 retain,
 *   3 dup, 4 brokerId is a string, 5 has a messageId property, 6 messageId is a number),
 *   brokerCounter (float64 LE), messageId (uint16 LE, 0 if none), brokerId length (uint8),
 *   brokerId (UTF-8), topic (UTF-8, the rest). Writing it costs a fraction of the V8 serializer,
 *   which was the largest single item of an enqueue in the broker's CPU profile (ADR 0008).
 * - V8 structured clone (`node:v8`, first byte 0xFF, its version tag) for any other packet (wills,
 *   MQTT 5 properties, PUBREL, extra properties): keeps `undefined` values, Buffers inside
 *   `properties`, and property types exactly as aedes left them.
 *
 * Either way a packet decodes to an object with the same own properties and values.
 */
import { deserialize, serialize } from 'node:v8';
import type { PacketLike } from './types.js';

export interface EncodedPacket {
  /** Every own enumerable property except `payload` and functions (compact or V8-serialized). */
  meta: Buffer;
  /** The payload bytes, or null if the packet has none (PUBREL). */
  payload: Buffer | null;
  /** 1 if the payload was a string and must be given back as one. */
  payloadText: 0 | 1;
  /** Topic + payload bytes: what queue caps and stats count. */
  bytes: number;
}

const EMPTY = Buffer.alloc(0);

/** First byte of a compact `meta` (V8's serializer always starts with 0xFF). */
export const COMPACT_TAG = 0x01;
const HEADER = 13;
const F_RETAIN = 0x04;
const F_DUP = 0x08;
const F_BROKER_ID = 0x10;
const F_HAS_MESSAGE_ID = 0x20;
const F_MESSAGE_ID = 0x40;
/** The compact shape's properties, in order (an optional `messageId` may follow). */
const COMPACT_KEYS = ['cmd', 'brokerId', 'brokerCounter', 'topic', 'payload', 'qos', 'retain', 'dup'];

function payloadBuffer(payload: unknown): { payload: Buffer | null; payloadText: 0 | 1 } {
  if (payload === undefined || payload === null) return { payload: null, payloadText: 0 };
  if (typeof payload === 'string') return { payload: Buffer.from(payload, 'utf8'), payloadText: 1 };
  if (Buffer.isBuffer(payload)) return { payload, payloadText: 0 };
  if (payload instanceof Uint8Array) {
    return { payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), payloadText: 0 };
  }
  throw new TypeError('packet payload must be a Buffer, Uint8Array or string');
}

/** Does the packet have exactly the compact shape (keys, order and value types)? */
function isCompact(packet: PacketLike, keys: readonly string[]): boolean {
  const n = keys.length;
  if (n !== COMPACT_KEYS.length && n !== COMPACT_KEYS.length + 1) return false;
  for (let i = 0; i < COMPACT_KEYS.length; i++) if (keys[i] !== COMPACT_KEYS[i]) return false;
  if (n > COMPACT_KEYS.length) {
    if (keys[COMPACT_KEYS.length] !== 'messageId') return false;
    const id = packet.messageId;
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id <= 0xffff)) return false;
  }
  const { brokerId, qos, payload } = packet;
  return (
    packet.cmd === 'publish' &&
    (brokerId === undefined || (typeof brokerId === 'string' && Buffer.byteLength(brokerId) <= 0xff)) &&
    typeof packet.brokerCounter === 'number' &&
    typeof packet.topic === 'string' &&
    (qos === 0 || qos === 1 || qos === 2) &&
    typeof packet.retain === 'boolean' &&
    typeof packet.dup === 'boolean' &&
    (typeof payload === 'string' || payload instanceof Uint8Array)
  );
}

function encodeCompact(packet: PacketLike, hasMessageId: boolean, topicBytes: number): Buffer {
  const brokerId = packet.brokerId;
  const idBytes = brokerId === undefined ? 0 : Buffer.byteLength(brokerId);
  const meta = Buffer.allocUnsafe(HEADER + idBytes + topicBytes);
  const messageId = packet.messageId;
  let flags = packet.qos as number;
  if (packet.retain === true) flags |= F_RETAIN;
  if (packet.dup === true) flags |= F_DUP;
  if (brokerId !== undefined) flags |= F_BROKER_ID;
  if (hasMessageId) flags |= F_HAS_MESSAGE_ID;
  if (typeof messageId === 'number') flags |= F_MESSAGE_ID;
  meta[0] = COMPACT_TAG;
  meta[1] = flags;
  meta.writeDoubleLE(packet.brokerCounter as number, 2);
  meta.writeUInt16LE(typeof messageId === 'number' ? messageId : 0, 10);
  meta[12] = idBytes;
  if (brokerId !== undefined) meta.write(brokerId, HEADER, 'utf8');
  meta.write(packet.topic as string, HEADER + idBytes, 'utf8');
  return meta;
}

function decodeCompact(meta: Buffer, payload: Buffer | string): PacketLike {
  const flags = meta[1] as number;
  const idBytes = meta[12] as number;
  const packet: PacketLike = {
    cmd: 'publish',
    brokerId: (flags & F_BROKER_ID) !== 0 ? meta.toString('utf8', HEADER, HEADER + idBytes) : undefined,
    brokerCounter: meta.readDoubleLE(2),
    topic: meta.toString('utf8', HEADER + idBytes),
    payload,
    qos: flags & 0x03,
    retain: (flags & F_RETAIN) !== 0,
    dup: (flags & F_DUP) !== 0,
  };
  if ((flags & F_HAS_MESSAGE_ID) !== 0) {
    packet.messageId = (flags & F_MESSAGE_ID) !== 0 ? meta.readUInt16LE(10) : undefined;
  }
  return packet;
}

export function encodePacket(packet: PacketLike): EncodedPacket {
  const keys = Object.keys(packet);
  const { payload, payloadText } = payloadBuffer(packet.payload);
  const topicBytes = typeof packet.topic === 'string' ? Buffer.byteLength(packet.topic) : 0;
  const bytes = topicBytes + (payload?.length ?? 0);
  if (isCompact(packet, keys)) {
    const meta = encodeCompact(packet, keys.length > COMPACT_KEYS.length, topicBytes);
    return { meta, payload, payloadText, bytes };
  }
  const rest: Record<string, unknown> = {};
  for (const key of keys) {
    if (key === 'payload') continue;
    const value = packet[key];
    if (typeof value === 'function') continue; // e.g. QoSPacket.writeCallback
    rest[key] = value;
  }
  return { meta: serialize(rest), payload, payloadText, bytes };
}

export function decodePacket(meta: Buffer, payload: Buffer | null, payloadText: number): PacketLike {
  const value = payload === null ? null : payloadText === 1 ? payload.toString('utf8') : payload;
  // A compact row always has a payload (encodePacket requires one); an empty one if it was lost.
  if (meta[0] === COMPACT_TAG) return decodeCompact(meta, value ?? EMPTY);
  const packet = deserialize(meta) as PacketLike;
  if (value !== null) packet.payload = value;
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

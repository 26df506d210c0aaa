/**
 * How the SQLite persistence stores and reads back queued packets (ADR 0008):
 *
 * - the row codec: a queued PUBLISH in aedes' shape is written in the compact format and comes
 *   back with exactly the same own properties and values; every other packet (wills, MQTT 5
 *   properties, PUBREL, odd values) goes through the V8 serializer as before, and rows written by
 *   schema 2 (V8 format only) still read (I1: an upgrade loses no queued command).
 */
import { serialize } from 'node:v8';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { PacketLike } from '../../broker/src/persistence/index.js';
import {
  aedesShape,
  COMPACT_TAG,
  decodePacket,
  encodePacket,
} from '../../broker/src/persistence/packet-codec.js';
import { publish } from './fixtures/persistence-helpers.js';

const V8_TAG = 0xff;

function roundTrip(packet: PacketLike): { tag: number | undefined; back: PacketLike } {
  const e = encodePacket(packet);
  return { tag: e.meta[0], back: decodePacket(e.meta, e.payload, e.payloadText) };
}

/** A PUBLISH as aedes hands it over (an aedes-packet Packet), before aedesShape. */
const arbitraryPublish = fc.record(
  {
    cmd: fc.constant('publish'),
    topic: fc.string({ unit: 'grapheme', maxLength: 60 }),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.string({ unit: 'grapheme', maxLength: 100 }),
    ),
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    dup: fc.boolean(),
    messageId: fc.integer({ min: 1, max: 0xffff }),
    brokerId: fc.option(fc.string({ unit: 'grapheme', maxLength: 60 }), { nil: undefined }),
    brokerCounter: fc.oneof(fc.nat(), fc.double({ noNaN: true })),
  },
  { requiredKeys: ['cmd', 'topic', 'payload', 'qos'] },
);

describe('row codec', () => {
  it('a queued PUBLISH in aedes shape is compact and decodes to the same properties and values', () => {
    fc.assert(
      fc.property(arbitraryPublish, (original) => {
        const shaped = aedesShape(original as PacketLike);
        const { tag, back } = roundTrip(shaped);
        expect(tag).toBe(COMPACT_TAG);
        expect(back).toStrictEqual(shaped); // includes `messageId: undefined` and the key set
      }),
      { numRuns: 500 },
    );
  });

  it('an inbound QoS 2 packet keeps its packet identifier in the compact format', () => {
    const shaped = aedesShape(publish('outpost/v1/site/site-a/ack', 'ack', 9));
    shaped.messageId = 65535;
    const { tag, back } = roundTrip(shaped);
    expect(tag).toBe(COMPACT_TAG);
    expect(back).toStrictEqual(shaped);
  });

  it('every other packet goes through the V8 serializer and round-trips exactly', () => {
    const shaped = aedesShape(publish('t', 'x', 1));
    const others: PacketLike[] = [
      // a will, stamped by putWill
      {
        cmd: 'publish',
        topic: 'outpost/v1/site/a/status',
        payload: 'offline',
        qos: 1,
        retain: true,
        brokerId: 'b',
        clientId: 'a',
      },
      // MQTT 5 properties carried by aedesShape
      aedesShape({
        ...publish('t', 'x', 2),
        properties: { correlationData: Buffer.from([1, 2]), userProperties: { a: 'b' } },
      }),
      { cmd: 'pubrel', messageId: 13 },
      { ...shaped, extra: 1 }, // an unknown property
      { ...shaped, brokerId: 'x'.repeat(256) }, // too long for the compact length byte
      { ...shaped, messageId: 70_000 }, // not a packet identifier
      { ...shaped, brokerCounter: '5' as unknown as number }, // a counter that is not a number
      { ...shaped, payload: undefined }, // no payload
      { ...shaped, qos: 3 },
    ];
    for (const p of others) {
      const { tag, back } = roundTrip(p);
      expect(tag, JSON.stringify(p)).toBe(V8_TAG);
      const expected: PacketLike = { ...p };
      if (expected.payload === undefined) delete expected.payload;
      expect(back).toStrictEqual(expected);
    }
  });

  it('I1: a row written by schema 2 (V8 meta) still decodes', () => {
    const { payload, ...rest } = aedesShape(publish('outpost/v1/site/site-a/cmd', 'old', 7, 'before'));
    const back = decodePacket(serialize(rest), Buffer.from('old'), 0);
    expect(back).toStrictEqual({ ...rest, payload: Buffer.from('old') });
    expect(payload).toEqual(Buffer.from('old'));
  });
});

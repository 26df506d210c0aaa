/**
 * How the SQLite persistence stores and reads back queued packets (ADR 0008):
 *
 * - the row codec: a queued PUBLISH in aedes' shape is written in the compact format and comes
 *   back with exactly the same own properties and values; every other packet (wills, MQTT 5
 *   properties, PUBREL, odd values) goes through the V8 serializer as before, and rows written by
 *   schema 2 (V8 format only) still read (I1: an upgrade loses no queued command);
 * - the row cache: a connected client's PUBACK deletes its row without reading it, and gives
 *   aedes the same packet a read from disk would have given; anything that changes or deletes a
 *   row drops its cached packet, so a stale packet is never handed out.
 */
import { serialize } from 'node:v8';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { PacketLike, SqlitePersistence } from '../../broker/src/persistence/index.js';
import { MAX_CACHED_ROWS } from '../../broker/src/persistence/outgoing-store.js';
import {
  aedesShape,
  COMPACT_TAG,
  decodePacket,
  encodePacket,
} from '../../broker/src/persistence/packet-codec.js';
import { collect, FakeBroker, open, publish, type TempDb, tempDb } from './fixtures/persistence-helpers.js';

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

describe('row cache', () => {
  let tmp: TempDb;
  const opened: SqlitePersistence[] = [];
  const site = { id: 'site-a' };
  const sub = { clientId: 'site-a' };
  const TOPIC = 'outpost/v1/site/site-a/cmd';

  /** A persistence on a file of its own; `connected`: site-a is connected (its rows are cached). */
  async function persistence(name: string, connected: boolean): Promise<SqlitePersistence> {
    const broker = new FakeBroker('broker-1');
    const p = await open(`${tmp.dir}/${name}.db`, {}, broker);
    opened.push(p);
    if (connected) broker.emit('client', { id: 'site-a' });
    return p;
  }

  beforeEach(() => {
    tmp = tempDb();
  });

  afterEach(async () => {
    for (const p of opened.splice(0)) await p.close();
    tmp.remove();
  });

  it('a PUBACK gives back the same packet from memory as from disk, and the row is gone', async () => {
    const cached = await persistence('cached', true);
    const disk = await persistence('disk', false);
    const packets = [
      publish(TOPIC, 'one', 1),
      { ...publish(TOPIC, 'two', 2), payload: 'a string payload' },
      { ...publish(TOPIC, 'three', 3), retain: true, dup: true },
    ];
    const results: PacketLike[][] = [];
    for (const p of [cached, disk]) {
      for (const packet of packets) await p.outgoingEnqueueCombi([sub], packet);
      for (const [i, packet] of packets.entries())
        await p.outgoingUpdate(site, { ...packet, messageId: 10 + i });
      const out: PacketLike[] = [];
      for (let i = 0; i < packets.length; i++) {
        out.push((await p.outgoingClearMessageId(site, { cmd: 'puback', messageId: 10 + i })) as PacketLike);
      }
      results.push(out);
    }
    expect(cached.cachedPackets()).toBe(0);
    expect(disk.cachedPackets()).toBe(0);
    expect(results[0]).toStrictEqual(results[1]);
    expect(results[0]?.map((m) => [String(m.payload), m.messageId])).toEqual([
      ['one', 10],
      ['a string payload', 11],
      ['three', 12],
    ]);
    expect(await collect(cached.outgoingStream(site))).toEqual([]);
    expect(cached.queueStats('site-a')).toEqual({ messages: 0, bytes: 0 });
  });

  it('rows are cached only while their client is connected, and at most MAX_CACHED_ROWS', async () => {
    const broker = new FakeBroker('broker-1');
    const p = await open(`${tmp.dir}/bounded.db`, {}, broker);
    opened.push(p);
    await p.outgoingEnqueueCombi([sub], publish(TOPIC, 'offline', 1));
    expect(p.cachedPackets()).toBe(0);
    broker.emit('client', { id: 'site-a' });
    for (let i = 0; i < MAX_CACHED_ROWS + 10; i++) {
      await p.outgoingEnqueueCombi([sub], publish(TOPIC, `m${i}`, 2 + i));
    }
    expect(p.cachedPackets()).toBe(MAX_CACHED_ROWS);
    // the oldest were dropped from memory, not from disk: clearing one reads it
    await p.outgoingUpdate(site, { ...publish(TOPIC, 'm0', 2), messageId: 1 });
    const first = await p.outgoingClearMessageId(site, { cmd: 'puback', messageId: 1 });
    expect(String(first?.payload)).toBe('m0');
    expect(p.queueStats('site-a').messages).toBe(MAX_CACHED_ROWS + 10);
  });

  it('a PUBREL that replaced a cached row is what PUBCOMP gives back (no stale packet)', async () => {
    const p = await persistence('qos2', true);
    const packet = { ...publish(TOPIC, 'qos2', 1), qos: 2 };
    await p.outgoingEnqueueCombi([sub], packet);
    await p.outgoingUpdate(site, { ...packet, messageId: 5 });
    await p.outgoingUpdate(site, { cmd: 'pubrel', messageId: 5 });
    expect(p.cachedPackets()).toBe(0);
    expect(await p.outgoingClearMessageId(site, { cmd: 'pubcomp', messageId: 5 })).toEqual({
      cmd: 'pubrel',
      messageId: 5,
    });
  });

  it('a clean session drops its cached rows with its queue', async () => {
    const p = await persistence('clean', true);
    await p.outgoingEnqueueCombi([sub, { clientId: 'site-b' }], publish(TOPIC, 'x', 1));
    expect(p.cachedPackets()).toBe(1); // site-b is not connected
    await p.cleanSubscriptions(site);
    expect(p.cachedPackets()).toBe(0);
    await p.outgoingUpdate(site, { ...publish(TOPIC, 'x', 1), messageId: 1 }).catch(() => undefined);
    expect(await p.outgoingClearMessageId(site, { cmd: 'puback', messageId: 1 })).toBeUndefined();
  });

  it('the queue stream of a connected client caches what it read; the PUBACK then reads nothing', async () => {
    const broker = new FakeBroker('broker-1');
    const p = await open(`${tmp.dir}/stream.db`, {}, broker);
    opened.push(p);
    for (let i = 0; i < 3; i++) await p.outgoingEnqueueCombi([sub], publish(TOPIC, `q${i}`, 1 + i));
    broker.emit('client', { id: 'site-a' }); // reconnects: aedes streams the stored queue
    const queued = await collect(p.outgoingStream(site));
    expect(p.cachedPackets()).toBe(3);
    queued[0]!.payload = Buffer.from('changed by the reader'); // what aedes does with it is its own
    for (const [i, m] of queued.entries()) await p.outgoingUpdate(site, { ...m, messageId: 20 + i });
    const cleared = await p.outgoingClearMessageId(site, { cmd: 'puback', messageId: 20 });
    expect(cleared).toStrictEqual({ ...aedesShape(publish(TOPIC, 'q0', 1)), messageId: 20 });
    expect(p.cachedPackets()).toBe(2);
  });

  it('does not pin the socket buffer a payload was parsed from', async () => {
    const p = await persistence('pin', true);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    await p.outgoingEnqueueCombi([sub], { ...publish(TOPIC, '', 1), payload: chunk.subarray(100, 110) });
    await p.outgoingUpdate(site, { ...publish(TOPIC, '', 1), messageId: 3 });
    const cleared = await p.outgoingClearMessageId(site, { cmd: 'puback', messageId: 3 });
    const payload = cleared?.payload as Buffer;
    expect(payload.toString()).toBe('a'.repeat(10));
    expect(payload.buffer).not.toBe(chunk.buffer);
  });
});

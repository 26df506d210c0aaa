/**
 * Fuzzing the real broker (`outpost broker` as a child process) with mutated MQTT over raw loopback
 * sockets (fast-check): random bytes, and valid CONNECT / SUBSCRIBE / PUBLISH / PUBACK / PINGREQ
 * sequences with bytes flipped, overwritten, inserted, deleted or cut off (I9: bad input is harmless;
 * I8: bounded). After every batch the broker process is alive and a normal site and controller still
 * exchange a QoS 1 message (no crash, no hang); its RSS stays within a fixed bound of where it began.
 *
 * The identities are claimed on the dev/test-only plain listener (`admin:fuzz`, `agent:site-f`), so
 * mutated packets get past authentication into aedes' parser, router and persistence. The envelope
 * decoder has its own fuzzing (test/protocol/properties.test.ts).
 */
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectPacket, publishPacket, subscribePacket } from '../broker/support/raw-mqtt.js';
import { BrokerChild } from './harness/broker-child.js';

let broker: BrokerChild;
let rssStart = 0;

beforeAll(async () => {
  broker = await BrokerChild.start({
    OUTPOST_BROKER_LIMITS_MAX_PACKET_BYTES: '65536',
    OUTPOST_BROKER_LIMITS_CONNECT_TIMEOUT_MS: '1000',
  });
  await broker.stillServes('warm-up');
  rssStart = broker.rssKb();
}, 120_000);

afterAll(async () => {
  await broker?.close();
});

const PINGREQ = Buffer.from([0xc0, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);
const puback = (id: number) => Buffer.from([0x40, 0x02, id >> 8, id & 0xff]);

/** Valid packet sequences to mutate: each starts with a CONNECT the broker accepts. */
const SEEDS: readonly Buffer[] = [
  connectPacket('fuzz', { username: 'admin:fuzz' }),
  Buffer.concat([
    connectPacket('fuzz', { username: 'admin:fuzz' }),
    subscribePacket('outpost/v1/site/+/cmd', 1, 7),
  ]),
  Buffer.concat([
    connectPacket('site-f', { username: 'agent:site-f', clean: false }),
    subscribePacket('outpost/v1/site/site-f/cmd', 1, 3),
    publishPacket('outpost/v1/site/site-f/ack', Buffer.alloc(40, 0xa5), 1, 4),
  ]),
  Buffer.concat([
    connectPacket('fuzz', { username: 'admin:fuzz', keepalive: 5 }),
    publishPacket('outpost/v1/site/site-f/cmd', Buffer.from('hello'), 1, 9),
    publishPacket('outpost/v1/site/site-f/status', Buffer.from('{"v":1}'), 0),
    PINGREQ,
    puback(9),
    DISCONNECT,
  ]),
];

type Edit = { at: number; value: number; op: 'flip' | 'set' | 'insert' | 'delete' };

function mutate(seed: Buffer, edits: readonly Edit[], cut: number | null): Buffer {
  const bytes = [...seed];
  for (const e of edits) {
    const i = e.at % (bytes.length + 1);
    if (e.op === 'insert') bytes.splice(i, 0, e.value);
    else if (i < bytes.length) {
      if (e.op === 'flip') bytes[i] = bytes[i]! ^ (1 << (e.value % 8));
      else if (e.op === 'set') bytes[i] = e.value;
      else bytes.splice(i, 1);
    }
  }
  const out = Buffer.from(bytes);
  return cut === null ? out : out.subarray(0, cut % (out.length + 1));
}

/** Writes the bytes on a fresh connection, lingers briefly (the broker may answer or close), then drops it. */
function fire(port: number, bytes: Buffer, lingerMs = 60): Promise<void> {
  return new Promise((resolve) => {
    const s: Socket = connect({ port, host: '127.0.0.1' });
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      s.destroy();
      resolve();
    };
    s.on('error', finish);
    s.on('close', finish);
    s.on('data', () => undefined);
    s.once('connect', () => {
      s.write(bytes);
      setTimeout(finish, lingerMs);
    });
    setTimeout(finish, 5_000);
  });
}

const edit = fc.record({
  at: fc.nat({ max: 400 }),
  value: fc.integer({ min: 0, max: 255 }),
  op: fc.constantFrom<Edit['op']>('flip', 'set', 'insert', 'delete'),
});

describe('mutated MQTT against the real broker (I9, I8)', () => {
  const BATCHES = 5;
  const RUNS = 150;

  test.each(Array.from({ length: BATCHES }, (_, i) => i))(
    'batch %i: random and mutated frames; broker alive and serving afterwards',
    async (batch) => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            fc.uint8Array({ minLength: 1, maxLength: 512 }).map((a) => Buffer.from(a)),
            fc
              .tuple(
                fc.constantFrom(...SEEDS),
                fc.array(edit, { minLength: 1, maxLength: 6 }),
                fc.option(fc.nat()),
              )
              .map(([seed, edits, cut]) => mutate(seed, edits, cut)),
          ),
          async (bytes) => {
            await fire(broker.port, bytes);
            return true;
          },
        ),
        { numRuns: RUNS, seed: 0xfa017 + batch, endOnFailure: true },
      );
      expect(broker.alive, `broker exited: ${broker.proc.output().slice(-2000)}`).toBe(true);
      await broker.stillServes(`after-batch-${batch}`);
    },
    120_000,
  );

  test('memory stays bounded after every batch', async () => {
    const rss = broker.rssKb();
    process.stdout.write(
      `fuzz: ${BATCHES * RUNS} inputs; broker RSS ${rssStart} kB -> ${rss} kB; ` +
        `malformed ${await broker.metric('outpost_broker_rejects_total', { reason: 'malformed-packet' })}, ` +
        `protocol ${await broker.metric('outpost_broker_rejects_total', { reason: 'protocol-error' })}\n`,
    );
    expect(broker.alive).toBe(true);
    expect(rss).toBeLessThan(rssStart + 96 * 1024);
  });
});

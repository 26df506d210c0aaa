/**
 * Bad input is harmless (I9) and the broker is bounded (I8): malformed bytes, oversized packets,
 * absurdly deep or long topics, packets out of order, slow consumers, connection floods, silent
 * clients. Each case drops or refuses only the offender, is counted by reason, and a normal client
 * is served afterwards. Plain TCP on 127.0.0.1 with the dev-only insecureTrustClientId identities.
 */
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/index.js';
import { type RunningBroker, startBroker } from './support/harness.js';
import {
  connectPacket,
  pubackPacket,
  publishPacket,
  rawConnect,
  subscribePacket,
} from './support/raw-mqtt.js';

const PLAIN = { plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true } };

let b: RunningBroker;

beforeAll(async () => {
  b = await startBroker(undefined, { ...PLAIN, limits: { maxPacketBytes: 8192 } });
});

afterAll(async () => {
  await b?.close();
});

function client(rb: RunningBroker, opts: IClientOptions): Promise<MqttClient> {
  return connectAsync(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...opts,
  });
}

/** A site subscribes to its cmd and the controller publishes to it: the broker still works. */
async function stillServes(rb: RunningBroker): Promise<void> {
  const site = await client(rb, { clientId: 'site-ok' });
  const got: string[] = [];
  site.on('message', (_t, p) => got.push(p.toString()));
  await site.subscribeAsync('outpost/v1/site/site-ok/cmd', { qos: 1 });
  const ctl = await client(rb, { clientId: 'controller', username: 'controller:controller' });
  await ctl.publishAsync('outpost/v1/site/site-ok/cmd', 'still-alive', { qos: 1 });
  await waitFor(() => got.includes('still-alive'), { message: 'delivery after abuse' });
  await site.endAsync();
  await ctl.endAsync();
}

describe('malformed input (I9)', () => {
  it('a reserved packet type is dropped at the framing layer', async () => {
    const before = await b.rejects('malformed-packet');
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(Buffer.from([0x00, 0x01, 0x02, 0x03]));
    await c.closed();
    expect(await b.rejects('malformed-packet')).toBe(before + 1);
  });

  it('a remaining length longer than 4 bytes is dropped', async () => {
    const before = await b.rejects('malformed-packet');
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]));
    await c.closed();
    expect(await b.rejects('malformed-packet')).toBe(before + 1);
  });

  it('a CONNECT with a garbled body is dropped by the MQTT parser', async () => {
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(Buffer.from([0x10, 0x06, 0x00, 0x04, 0x4d, 0x51, 0x58, 0x58])); // "MQXX"
    await c.closed();
    expect(c.received().length).toBe(0);
  });

  it('PUBACK before CONNECT is a protocol error, not a crash', async () => {
    const before = await b.rejects('protocol-error');
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(pubackPacket(7));
    await c.closed();
    expect(await b.rejects('protocol-error')).toBe(before + 1);
  });

  it('a second CONNECT on a live connection is a protocol error', async () => {
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(connectPacket('site-raw'));
    const connack = await c.bytes(4);
    expect([...connack.subarray(0, 4)]).toEqual([0x20, 0x02, 0x00, 0x00]);
    c.socket.write(connectPacket('site-raw'));
    await c.closed();
  });

  it('200 random byte strings (seeded) on fresh connections leave the broker serving', async () => {
    let seed = 0x5eed;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 200; i++) {
      const len = 1 + (rand() % 64);
      const bytes = Buffer.from(Array.from({ length: len }, () => rand() & 0xff));
      if (i % 2 === 0) bytes[0] = 0x10; // half of them look like a CONNECT
      const c = await rawConnect(b.ports.plainPort!);
      c.socket.write(bytes);
      c.socket.end();
      await c.closed(5000);
    }
    await stillServes(b);
  });
});

describe('size and shape limits (I8)', () => {
  it('an oversized PUBLISH is refused from its header, before the body is buffered', async () => {
    const before = await b.rejects('packet-too-large');
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(connectPacket('site-big'));
    await c.bytes(4);
    const big = publishPacket('outpost/v1/site/site-big/state', Buffer.alloc(20_000, 1));
    c.socket.write(big.subarray(0, 8)); // header and length only
    await c.closed();
    expect(await b.rejects('packet-too-large')).toBe(before + 1);
    expect(b.log.find('packet-too-large').at(-1)?.['detail']).toMatch(/> 8192 bytes/);
  });

  it('an oversized payload from MQTT.js drops that client only', async () => {
    const before = await b.rejects('packet-too-large');
    const c = await client(b, { clientId: 'site-big2' });
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    c.publish('outpost/v1/site/site-big2/state', Buffer.alloc(50_000, 7), { qos: 1 });
    await closed;
    c.end(true);
    expect(await b.rejects('packet-too-large')).toBe(before + 1);
    await stillServes(b);
  });

  it('a 200-level topic drops the publisher and does not crash the router', async () => {
    const before = await b.rejects('topic-too-deep');
    const c = await client(b, { clientId: 'admin', username: 'admin:admin' });
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    c.publish(Array.from({ length: 200 }, (_, i) => `l${i}`).join('/'), 'x', { qos: 0 });
    await closed;
    c.end(true);
    expect(await b.rejects('topic-too-deep')).toBe(before + 1);
    await stillServes(b);
  });

  it('a 200-level subscription drops the subscriber', async () => {
    const before = await b.rejects('topic-too-deep');
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(connectPacket('admin', { username: 'admin:admin' }));
    await c.bytes(4);
    c.socket.write(subscribePacket(Array.from({ length: 200 }, () => 'x').join('/')));
    await c.closed();
    expect(await b.rejects('topic-too-deep')).toBe(before + 1);
  });

  it('filters deeper than limits.maxTopicLevels or longer than maxTopicLength get SUBACK 0x80', async () => {
    const deep = await b.rejects('topic-too-deep');
    const long = await b.rejects('topic-too-long');
    const c = await client(b, { clientId: 'admin', username: 'admin:admin' });
    const seventeen = Array.from({ length: 17 }, () => 'x').join('/');
    const granted = await c
      .subscribeAsync([seventeen, 'y'.repeat(300), 'ok/filter'], { qos: 0 })
      .catch((e: { packet?: { granted?: number[] } }) => e.packet?.granted);
    expect(granted).toEqual([128, 128, 0]);
    expect(await b.rejects('topic-too-deep')).toBe(deep + 1);
    expect(await b.rejects('topic-too-long')).toBe(long + 1);
    await c.endAsync();
  });
});

describe('slow and silent clients (I8)', () => {
  it('a subscriber that stops reading is disconnected after the drain timeout; others keep getting messages', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, limits: { drainTimeoutMs: 300 } });
    try {
      const slow = await rawConnect(rb.ports.plainPort!);
      slow.socket.write(connectPacket('site-slow'));
      await slow.bytes(4);
      slow.socket.write(subscribePacket('outpost/v1/site/site-slow/cmd', 0));
      await slow.bytes(9); // CONNACK + SUBACK
      slow.socket.pause(); // stop reading: the kernel buffers fill, then the broker's
      const ctl = await client(rb, { clientId: 'controller', username: 'controller:controller' });
      const chunk = Buffer.alloc(60_000, 3);
      for (let i = 0; i < 600 && (await rb.rejects('slow-consumer')) === 0; i++) {
        await ctl.publishAsync('outpost/v1/site/site-slow/cmd', chunk, { qos: 1 });
      }
      await waitFor(async () => (await rb.rejects('slow-consumer')) >= 1, {
        message: 'slow consumer dropped',
      });
      slow.socket.resume();
      await slow.closed();
      // aedes fails every pending write of that client: still one refusal for one connection
      expect(await rb.rejects('slow-consumer')).toBe(1);
      expect(rb.log.find('slow-consumer', { clientId: 'site-slow' })).toHaveLength(1);
      await ctl.endAsync();
      await stillServes(rb);
    } finally {
      await rb.close();
    }
  });

  it('no CONNECT within connectTimeoutMs closes the socket', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, limits: { connectTimeoutMs: 300 } });
    try {
      const c = await rawConnect(rb.ports.plainPort!);
      await c.closed(3000);
      expect(await rb.rejects('connect-timeout')).toBe(1);
    } finally {
      await rb.close();
    }
  });

  it('a client silent for 1.5 x keepalive is dropped', async () => {
    const c = await rawConnect(b.ports.plainPort!);
    const before = await b.rejects('keepalive-timeout');
    c.socket.write(connectPacket('site-quiet', { keepalive: 1 }));
    await c.bytes(4);
    await c.closed(4000);
    expect(await b.rejects('keepalive-timeout')).toBe(before + 1);
  });

  it('a keepalive above limits.maxKeepaliveSec is refused with CONNACK 2', async () => {
    const c = await rawConnect(b.ports.plainPort!);
    c.socket.write(connectPacket('site-sleepy', { keepalive: 4000 }));
    const connack = await c.bytes(4);
    expect([...connack.subarray(0, 4)]).toEqual([0x20, 0x02, 0x00, 0x02]);
    await c.closed();
  });
});

describe('connection floods', () => {
  it('the per-IP token bucket refuses connections past the burst', async () => {
    const rb = await startBroker(undefined, {
      ...PLAIN,
      rateLimit: { perIpBurst: 3, perIpPerSec: 0.001, globalBurst: 100, globalPerSec: 100 },
    });
    try {
      const conns = [];
      for (let i = 0; i < 3; i++) conns.push(await rawConnect(rb.ports.plainPort!));
      const fourth = await rawConnect(rb.ports.plainPort!);
      await fourth.closed();
      expect(fourth.received().length).toBe(0);
      expect(await rb.rejects('rate-limited')).toBe(1);
      expect(rb.log.find('rate-limited').at(-1)?.['limit']).toBe('per-ip');
      for (const c of conns) c.socket.destroy();
    } finally {
      await rb.close();
    }
  });

  it('maxConnections caps concurrent connections', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, limits: { maxConnections: 2 } });
    try {
      const a = await client(rb, { clientId: 'site-1' });
      const c2 = await client(rb, { clientId: 'site-2' });
      const third = await rawConnect(rb.ports.plainPort!);
      await third.closed();
      expect(await rb.rejects('too-many-connections')).toBe(1);
      await a.endAsync();
      await c2.endAsync();
    } finally {
      await rb.close();
    }
  });
});

describe('connection gauge', () => {
  it('counts connections by role and returns to zero when they go, however they go', async () => {
    const rb = await startBroker(undefined, PLAIN);
    try {
      const gauge = (role: string) => rb.broker.metrics.value('outpost_broker_connections', { role });
      const a = await client(rb, { clientId: 'site-1', clean: false });
      const c = await client(rb, { clientId: 'controller', username: 'controller:controller' });
      await waitFor(async () => (await gauge('agent')) === 1 && (await gauge('controller')) === 1);
      a.stream.destroy(); // abrupt
      await c.endAsync(); // clean DISCONNECT
      await waitFor(async () => (await gauge('agent')) === 0 && (await gauge('controller')) === 0, {
        message: 'gauge back to 0',
      });
      const again = await client(rb, { clientId: 'site-1', clean: false });
      const takeover = await client(rb, { clientId: 'site-1', clean: false }); // same id: the first is closed
      await waitFor(async () => (await gauge('agent')) === 1, { message: 'one agent after takeover' });
      again.end(true);
      await takeover.endAsync();
      await waitFor(async () => (await gauge('agent')) === 0, { message: 'gauge back to 0 after takeover' });
    } finally {
      await rb.close();
    }
  });
});

describe('$SYS', () => {
  it('the aedes heartbeat is published on $SYS/<id>/heartbeat and only admin may read it', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, id: 'broker-hb', heartbeatIntervalMs: 1000 });
    try {
      const admin = await client(rb, { clientId: 'admin', username: 'admin:admin' });
      const beats: string[] = [];
      admin.on('message', (topic, p) => beats.push(`${topic} ${p}`));
      await admin.subscribeAsync('$SYS/+/heartbeat', { qos: 0 });
      await waitFor(() => beats.length > 0, { timeoutMs: 5000, message: 'heartbeat' });
      expect(beats[0]).toBe('$SYS/broker-hb/heartbeat broker-hb');
      await admin.endAsync();
      const site = await client(rb, { clientId: 'site-a' });
      const granted = await site
        .subscribeAsync('$SYS/+/heartbeat')
        .catch((e: { packet?: { granted?: number[] } }) => e.packet?.granted);
      expect(granted).toEqual([128]);
      await site.endAsync();
    } finally {
      await rb.close();
    }
  });
});

describe('the insecure dev identities are confined to the plain loopback listener', () => {
  it('role:name without a password works on plain with insecureTrustClientId, and the ACL still applies', async () => {
    const c = await client(b, { clientId: 'site-dev' });
    const refused = await c
      .subscribeAsync('outpost/v1/site/other/cmd')
      .catch((e: { packet?: { granted?: number[] } }) => e.packet?.granted);
    expect(refused).toEqual([128]);
    await c.endAsync();
  });

  it('without the flag, plain needs a password user', async () => {
    const rb = await startBroker(undefined, { plain: { enabled: true, host: '127.0.0.1', port: 0 } });
    try {
      const err = await client(rb, { clientId: 'site-dev' }).then(
        (c) => c.endAsync().then(() => undefined),
        (e: Error) => e,
      );
      expect(err?.message).toMatch(/Not authorized/i);
      expect(await rb.rejects('no-credentials')).toBe(1);
    } finally {
      await rb.close();
    }
  });
});

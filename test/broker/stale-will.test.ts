/**
 * Last wills (broker/src/wills.ts, SPEC [MQTT-6]): a connection's will is published when the
 * connection dies — also when a takeover replaces it, before the new connection's CONNACK — but not
 * for a connection that was never acknowledged, nor while another connection of the client id is
 * connected. In a reconnect storm such wills overwrote sites' newer `online` statuses (I10: 282–744 of
 * 10,000 simulated sites shown offline while connected).
 */
import type { Client } from 'aedes';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { isStaleWill } from '../../broker/src/wills.js';
import { tmpDir, waitFor } from '../helpers/index.js';
import { type RunningBroker, startBroker } from './support/harness.js';

const PLAIN = { plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true } };
const status = (site: string) => `outpost/v1/site/${site}/status`;

function site(rb: RunningBroker, will: string, opts: IClientOptions = {}): Promise<MqttClient> {
  return connectAsync(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    clientId: 'site-a',
    clean: false,
    will: { topic: status('site-a'), payload: Buffer.from(will), qos: 1, retain: true },
    ...opts,
  });
}

async function watcher(rb: RunningBroker, got: string[]): Promise<MqttClient> {
  const c = connect(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    clientId: 'controller',
    username: 'controller:controller',
    clean: true,
  });
  c.on('message', (_t, p, packet) => got.push(`${packet.retain ? 'retained ' : ''}${p.toString()}`));
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  await c.subscribeAsync(status('+'), { qos: 1 });
  return c;
}

describe('last wills and newer connections', () => {
  it('takeover: the replaced connection’s will comes before the new connection’s status, never after', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const got: string[] = [];
      const ctl = await watcher(rb, got);
      const a = await site(rb, 'offline (will of A)');
      const aClosed = new Promise<void>((resolve) => a.once('close', () => resolve()));
      const b = await site(rb, 'offline (will of B)'); // same client id: the broker closes A
      await aClosed;
      await b.publishAsync(status('site-a'), 'online (B)', { qos: 1, retain: true });
      await waitFor(() => got.includes('online (B)'), { message: 'B online', timeoutMs: 10_000 });
      // Messages to one session arrive in order: A's will (MQTT 3.1.1 publishes it) precedes B's status.
      expect(got).toEqual(['offline (will of A)', 'online (B)']);
      // The retained status is B's too: subscribing again delivers it.
      await ctl.unsubscribeAsync(status('+'));
      await ctl.subscribeAsync(status('+'), { qos: 1 });
      await waitFor(() => got.length > 2, { message: 'retained status', timeoutMs: 10_000 });
      expect(got).toEqual(['offline (will of A)', 'online (B)', 'retained online (B)']);
      // B's own will still works: its connection dies without DISCONNECT, nothing newer exists.
      b.stream.destroy();
      await waitFor(() => got.includes('offline (will of B)'), { message: "B's will", timeoutMs: 10_000 });
      expect(got).toEqual([
        'offline (will of A)',
        'online (B)',
        'retained online (B)',
        'offline (will of B)',
      ]);
      await ctl.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('a connection that dies with no newer one has its will published', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const got: string[] = [];
      const ctl = await watcher(rb, got);
      const a = await site(rb, 'offline (will of A)');
      await a.publishAsync(status('site-a'), 'online (A)', { qos: 1, retain: true });
      a.stream.destroy();
      await waitFor(() => got.length >= 2, { message: "A's will", timeoutMs: 10_000 });
      expect(got).toEqual(['online (A)', 'offline (will of A)']);
      // A clean DISCONNECT discards the will (MQTT 3.1.1 §3.14).
      const again = await site(rb, 'offline (will of A2)');
      await again.publishAsync(status('site-a'), 'online (A2)', { qos: 1, retain: true });
      await again.endAsync();
      const marker = await site(rb, 'unused', { clientId: 'site-b', will: undefined });
      await marker.publishAsync(status('site-b'), 'marker', { qos: 1 });
      await waitFor(() => got.includes('marker'), { message: 'marker', timeoutMs: 10_000 });
      expect(got).toEqual(['online (A)', 'offline (will of A)', 'online (A2)', 'marker']);
      await marker.endAsync();
      await ctl.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('takeover: the replaced connection’s close keeps the stored will of the connection that replaced it', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const got: string[] = [];
      const ctl = await watcher(rb, got);
      const { persistence } = rb.broker.aedes as unknown as {
        persistence: {
          getWill(c: { id: string }): Promise<{ payload: Buffer } | undefined>;
        };
      };
      const a = await site(rb, 'offline (will of A)');
      const aClosed = new Promise<void>((resolve) => a.once('close', () => resolve()));
      const b = await site(rb, 'offline (will of B)');
      await aClosed;
      // A's will is published, then aedes deletes "the will of site-a" — by then B's.
      await waitFor(() => got.includes('offline (will of A)'), { message: "A's will", timeoutMs: 10_000 });
      const marker = await site(rb, 'unused', { clientId: 'site-b', will: undefined });
      await marker.publishAsync(status('site-b'), 'marker', { qos: 1 }); // the writer ran A's delete
      await waitFor(() => got.includes('marker'), { message: 'marker', timeoutMs: 10_000 });
      const stored = await persistence.getWill({ id: 'site-a' });
      expect(stored?.payload.toString()).toBe('offline (will of B)');
      // B's will still goes out when B dies, and is deleted after it.
      b.stream.destroy();
      await waitFor(() => got.includes('offline (will of B)'), { message: "B's will", timeoutMs: 10_000 });
      await waitFor(async () => (await persistence.getWill({ id: 'site-a' })) === undefined, {
        message: "B's will deleted",
        timeoutMs: 10_000,
      });
      await marker.endAsync();
      await ctl.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('the rule: no will for a connection never acknowledged, nor while another one is connected', () => {
    const will = { topic: 'w' };
    const conn = (o: object) => ({ id: 'site-a', ...o }) as unknown as Client;
    const live = conn({ will: { topic: 'w' }, connackSent: true, connected: true });
    // An attempt the site gave up on, authenticated late and found closed before its CONNACK.
    const abandoned = conn({ will, connackSent: false, connected: false });
    expect(isStaleWill(abandoned, will, live)).toBe(true);
    expect(isStaleWill(abandoned, will, undefined)).toBe(true);
    // An acknowledged connection whose close is noticed while the client is connected on another.
    const old = conn({ will, connackSent: true, connected: false });
    expect(isStaleWill(old, will, live)).toBe(true);
    // It dies and nothing else is connected (or a takeover: the new one is not registered yet).
    expect(isStaleWill(old, will, undefined)).toBe(false);
    expect(isStaleWill(old, will, old)).toBe(false);
    expect(isStaleWill(old, will, conn({ connackSent: false, connected: false }))).toBe(false);
    expect(isStaleWill(old, { topic: 'w' }, live)).toBe(false); // not its will object: a publish
    expect(isStaleWill(null, will, live)).toBe(false); // a will stored by an earlier broker run
  });
});

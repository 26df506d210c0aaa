/**
 * Delivery to persistent sessions through createBroker on the durable persistence
 * (broker/src/delivery.ts, SPEC [BRK-6]): a live message is never silently dropped because another
 * one overtook it (I1: the final `applied` ack of a command must reach the controller), and a
 * reconnecting session gets its stored queue before anything published meanwhile (MQTT 3.1.1 §4.6;
 * I10: a site's old last will must not land after its newer `online` status).
 * Both failed before the guard: the first lost acks, the second interleaved new and old messages.
 */
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { tmpDir, waitFor } from '../helpers/index.js';
import { type RunningBroker, startBroker } from './support/harness.js';

const PLAIN = { plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true } };
const topic = (site: string, ch: string) => `outpost/v1/site/${site}/${ch}`;

function client(rb: RunningBroker, opts: IClientOptions): Promise<MqttClient> {
  return connectAsync(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...opts,
  });
}

/** A persistent controller session that records every message, from before its CONNACK on. */
async function controller(rb: RunningBroker, got: string[]): Promise<MqttClient> {
  const c = connect(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    clientId: 'controller',
    username: 'controller:controller',
    clean: false,
    manualConnect: true,
  });
  c.on('message', (t, p) => got.push(`${t.split('/')[4]}:${p.toString()}`));
  c.connect();
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

describe('delivery to persistent sessions (durable broker)', () => {
  it('a QoS 1 ack overtaken by a QoS 0 status is still delivered live (I1)', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const got: string[] = [];
      const ctl = await controller(rb, got);
      await ctl.subscribeAsync([topic('+', 'ack'), topic('+', 'status')], { qos: 1 });
      const site = await client(rb, { clientId: 'site-a' });
      // Same tick, one socket read: the QoS 1 ack waits for its commit, the QoS 0 status does not,
      // so the status takes a higher broker counter and reaches the controller first.
      const n = 20;
      const acks: Promise<unknown>[] = [];
      for (let i = 0; i < n; i++) {
        acks.push(site.publishAsync(topic('site-a', 'ack'), `ack-${i}`, { qos: 1 }));
        site.publish(topic('site-a', 'status'), `st-${i}`, { qos: 0 });
      }
      await Promise.all(acks); // every ack committed and PUBACKed by the broker
      await waitFor(() => got.filter((m) => m.startsWith('ack:')).length >= n, {
        message: 'all acks delivered live',
        timeoutMs: 10_000,
      });
      expect(got.filter((m) => m.startsWith('ack:'))).toEqual(
        Array.from({ length: n }, (_, i) => `ack:ack-${i}`),
      );
      expect(got.filter((m) => m.startsWith('status:'))).toHaveLength(n);
      await site.endAsync();
      await ctl.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('a reconnecting session gets its stored queue before messages published meanwhile, each once', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const first: string[] = [];
      const ctl = await controller(rb, first);
      await ctl.subscribeAsync(topic('+', 'status'), { qos: 1 });
      await ctl.endAsync();
      const site = await client(rb, { clientId: 'site-a' });
      const old = 400;
      for (let i = 0; i < old; i++)
        await site.publishAsync(topic('site-a', 'status'), `old-${i}`, { qos: 1 });

      // The controller comes back while the site keeps publishing: some of the new messages arrive
      // while the broker is still streaming the 400 stored ones.
      const got: string[] = [];
      const back = controller(rb, got);
      const fresh = 200;
      for (let i = 0; i < fresh; i++)
        await site.publishAsync(topic('site-a', 'status'), `new-${i}`, { qos: 1 });
      const ctl2 = await back;
      await waitFor(() => got.length >= old + fresh, {
        message: 'every message delivered',
        timeoutMs: 20_000,
      });
      const expected = [
        ...Array.from({ length: old }, (_, i) => `status:old-${i}`),
        ...Array.from({ length: fresh }, (_, i) => `status:new-${i}`),
      ];
      expect(got).toEqual(expected);
      await site.endAsync();
      await ctl2.endAsync();
    } finally {
      await rb.close();
    }
  });
});

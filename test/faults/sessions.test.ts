/**
 * Broker-level resource faults against the product broker (`outpost broker`, durable SQLite) as a
 * child process:
 *
 * (f) 1,000 abandoned persistent sessions (sites that subscribed, then vanished) under a publish load
 *     far beyond their queue cap: the per-session cap holds (drops counted), the database and the
 *     broker's RSS stop growing once the caps are reached, and the abandoned sessions are expired
 *     (I8).
 * (g) A frozen SCADA subscriber (a raw socket that subscribes to every site's status and then stops
 *     reading): the broker disconnects it as a slow consumer while the other subscribers and a
 *     site/controller command exchange keep flowing (I8).
 */
import { connect, type Socket } from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectPacket, subscribePacket } from '../broker/support/raw-mqtt.js';
import { sleep, waitFor } from '../helpers/index.js';
import { BrokerChild } from './harness/broker-child.js';

const SESSIONS = 1_000;
const CAP = 20;
const EXPIRY_MS = 60_000;
let broker: BrokerChild;

beforeAll(async () => {
  broker = await BrokerChild.start({
    OUTPOST_BROKER_QUEUE_MAX_MESSAGES: String(CAP),
    OUTPOST_BROKER_QUEUE_MAX_BYTES: String(1024 * 1024),
    OUTPOST_BROKER_SESSIONS_EXPIRY_MS: String(EXPIRY_MS),
    OUTPOST_BROKER_SESSIONS_SWEEP_INTERVAL_MS: '2000',
    OUTPOST_BROKER_LIMITS_DRAIN_TIMEOUT_MS: '3000',
  });
}, 120_000);

afterAll(async () => {
  await broker?.close();
});

/** Raw CONNECT (clean=false) + SUBSCRIBE QoS 1 to its own cmd topic; waits for CONNACK and SUBACK. */
function persistentSession(port: number, site: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ port, host: '127.0.0.1' });
    let got = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`session ${site}: no SUBACK`));
    }, 20_000);
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('data', (d) => {
      got += d.length;
      if (got >= 4 + 5) {
        clearTimeout(timer);
        // Abandoned: no DISCONNECT, the socket just goes away.
        s.destroy();
        resolve();
      }
    });
    s.once('connect', () =>
      s.write(
        Buffer.concat([
          connectPacket(site, { username: `agent:${site}`, clean: false }),
          subscribePacket(`outpost/v1/site/${site}/cmd`, 1, 1),
        ]),
      ),
    );
  });
}

async function pool<T>(items: readonly T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

interface Sample {
  round: number;
  rssKb: number;
  dbBytes: number;
  queued: number;
  dropped: number;
}

describe('(f) 1,000 abandoned persistent sessions under publish load (I8)', () => {
  test('queue caps hold, database and RSS stop growing, abandoned sessions expire', async () => {
    const sites = Array.from({ length: SESSIONS }, (_, i) => `ab${i}`);
    await pool(sites, 25, (s) => persistentSession(broker.port, s));
    const abandonedAt = Date.now();
    const ctl = await broker.client('controller', 'controller', { clientId: 'controller.load' });
    const payload = Buffer.alloc(256, 0x5a);
    const samples: Sample[] = [];
    const sample = async (round: number) =>
      samples.push({
        round,
        rssKb: broker.rssKb(),
        dbBytes: broker.dbBytes(),
        queued: await broker.metric('outpost_broker_queued_messages_total'),
        dropped: await broker.metric('outpost_broker_queue_dropped_total'),
      });
    const ROUNDS = 3 * CAP;
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        await Promise.all(
          sites.map((s) => ctl.publishAsync(`outpost/v1/site/${s}/cmd`, payload, { qos: 1 })),
        );
        if (round === CAP + 5 || round === 2 * CAP || round === ROUNDS) await sample(round);
      }
    } finally {
      await ctl.endAsync(true);
    }
    process.stdout.write(
      `(f) ${SESSIONS} abandoned sessions, ${ROUNDS * SESSIONS} publishes, cap ${CAP}: ${JSON.stringify(samples)}\n`,
    );
    const [a, , c] = samples as [Sample, Sample, Sample];
    for (const s of samples) expect(s.queued).toBeLessThanOrEqual(SESSIONS * CAP);
    expect(c.dropped).toBeGreaterThanOrEqual(SESSIONS * (ROUNDS - CAP) * 0.95);
    // Past the cap, more publishes add nothing: storage and memory plateau.
    expect(c.dbBytes).toBeLessThan(a.dbBytes * 1.25 + 2 * 1024 * 1024);
    expect(c.rssKb).toBeLessThan(a.rssKb + 64 * 1024);
    await broker.stillServes('after-load');

    // Abandoned sessions are deleted with their queues once unused for the expiry time.
    await waitFor(async () => (await broker.metric('outpost_broker_sessions_expired_total')) >= SESSIONS, {
      timeoutMs: Math.max(10_000, abandonedAt + EXPIRY_MS + 30_000 - Date.now()),
      intervalMs: 1_000,
      message: 'abandoned sessions expired',
    });
    expect(await broker.metric('outpost_broker_queued_messages_total')).toBeLessThan(CAP);
  }, 300_000);
});

describe('(g) a frozen SCADA subscriber (I8)', () => {
  test('is disconnected as a slow consumer; other subscribers and command traffic keep flowing', async () => {
    const slowBefore = await broker.metric('outpost_broker_rejects_total', { reason: 'slow-consumer' });
    // The frozen one: subscribes to every site's status, then never reads again.
    const frozen: Socket = connect({ port: broker.port, host: '127.0.0.1' });
    frozen.on('error', () => undefined);
    await new Promise<void>((resolve) => frozen.once('connect', () => resolve()));
    frozen.write(
      Buffer.concat([
        connectPacket('hmi-frozen', { username: 'scada:hmi-frozen' }),
        subscribePacket('outpost/v1/site/+/status', 0, 1),
      ]),
    );
    await new Promise<void>((resolve) => {
      let got = 0;
      const on = (d: Buffer) => {
        got += d.length;
        if (got >= 4 + 5) {
          frozen.off('data', on);
          resolve();
        }
      };
      frozen.on('data', on);
    });
    frozen.pause();

    const healthy = await broker.client('scada', 'hmi-ok');
    let healthyGot = 0;
    healthy.on('message', () => healthyGot++);
    await healthy.subscribeAsync('outpost/v1/site/+/status', { qos: 0 });

    // Command traffic alongside: a site and the controller.
    const site = await broker.client('agent', 'pump-1', { clean: false });
    const cmds: string[] = [];
    site.on('message', (_t, p) => cmds.push(p.toString()));
    await site.subscribeAsync('outpost/v1/site/pump-1/cmd', { qos: 1 });
    const ctl = await broker.client('controller', 'controller', { clientId: 'controller.g' });
    const admin = await broker.client('admin', 'admin', { clientId: 'admin.g' });

    const big = Buffer.alloc(60 * 1024, 0x20);
    let published = 0;
    let commands = 0;
    const clients: MqttClient[] = [healthy, site, ctl, admin];
    try {
      const deadline = Date.now() + 90_000;
      while (Date.now() < deadline) {
        await admin.publishAsync(`outpost/v1/site/pump-${published % 10}/status`, big, { qos: 1 });
        published++;
        if (published % 10 === 0) {
          await ctl.publishAsync('outpost/v1/site/pump-1/cmd', `cmd-${commands}`, { qos: 1 });
          commands++;
          if ((await broker.metric('outpost_broker_rejects_total', { reason: 'slow-consumer' })) > slowBefore)
            break;
        }
      }
      expect(await broker.metric('outpost_broker_rejects_total', { reason: 'slow-consumer' })).toBe(
        slowBefore + 1,
      );
      // Everyone else got everything.
      await waitFor(() => healthyGot >= published && cmds.length >= commands, {
        timeoutMs: 30_000,
        message: `healthy subscriber ${healthyGot}/${published}, site ${cmds.length}/${commands}`,
      });
      await sleep(500);
      expect(await broker.metric('outpost_broker_connections', { role: 'scada' })).toBe(1);
      process.stdout.write(
        `(g) frozen subscriber dropped after ${published} x 60 KiB status messages; ` +
          `healthy subscriber got ${healthyGot}, site got ${cmds.length}/${commands} commands\n`,
      );
      await broker.stillServes('after-slow-consumer');
    } finally {
      frozen.destroy();
      for (const c of clients) await c.endAsync(true);
    }
  }, 180_000);
});

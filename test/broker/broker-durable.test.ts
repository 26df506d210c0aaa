/**
 * createBroker on the durable SQLite persistence (broker/src/persistence): queued messages survive a
 * broker restart (I1, I5), the per-client queue cap drops the newest and counts it (I8), abandoned
 * sessions expire (I8), and a filter the ACL refused is never stored in a persistent session.
 */
import { join } from 'node:path';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { createSqlitePersistence } from '../../broker/src/persistence/index.js';
import { DB_FILE } from '../../broker/src/store.js';
import { sleep, tmpDir, waitFor } from '../helpers/index.js';
import { type RunningBroker, startBroker } from './support/harness.js';

const PLAIN = { plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true } };
const cmd = (site: string) => `outpost/v1/site/${site}/cmd`;

function client(rb: RunningBroker, opts: IClientOptions): Promise<MqttClient> {
  return connectAsync(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...opts,
  });
}

const controller = (rb: RunningBroker) =>
  client(rb, { clientId: 'controller', username: 'controller:controller' });

/** Connects a persistent session and collects its messages from before CONNACK on. */
async function site(
  rb: RunningBroker,
  id: string,
): Promise<{ c: MqttClient; got: string[]; sessionPresent: boolean }> {
  const got: string[] = [];
  const c = connect(`mqtt://127.0.0.1:${rb.ports.plainPort}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    clientId: id,
    clean: false,
    manualConnect: true,
  });
  c.on('message', (_t, p) => got.push(p.toString()));
  c.connect();
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    c.once('connect', (p) => resolve(p));
    c.once('error', reject);
  });
  return { c, got, sessionPresent: connack.sessionPresent };
}

describe('durable persistence through createBroker', () => {
  it('messages queued for an offline site survive a broker restart (I1, I5)', async () => {
    const data = tmpDir('data');
    const first = await startBroker(undefined, { ...PLAIN, dataDir: data });
    let second: RunningBroker | undefined;
    try {
      const s = await client(first, { clientId: 'site-q', clean: false });
      await s.subscribeAsync(cmd('site-q'), { qos: 1 });
      await s.endAsync();
      const ctl = await controller(first);
      for (const n of [1, 2, 3]) await ctl.publishAsync(cmd('site-q'), `cmd-${n}`, { qos: 1 });
      await ctl.endAsync();
      expect(await first.broker.metrics.value('outpost_broker_queued_messages', { client: 'site-q' })).toBe(
        3,
      );
      await first.close();

      second = await startBroker(undefined, { ...PLAIN, dataDir: data });
      const again = await site(second, 'site-q');
      expect(again.sessionPresent).toBe(true);
      await waitFor(() => again.got.length === 3, { message: 'queued messages after restart' });
      expect(again.got).toEqual(['cmd-1', 'cmd-2', 'cmd-3']);
      await again.c.endAsync();
    } finally {
      await first.close();
      await second?.close();
    }
  });

  it('the per-client queue cap keeps the oldest, drops and counts the newest (I8)', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data'), queue: { maxMessages: 2 } });
    try {
      const s = await client(rb, { clientId: 'site-cap', clean: false });
      await s.subscribeAsync(cmd('site-cap'), { qos: 1 });
      await s.endAsync();
      const ctl = await controller(rb);
      for (const n of [1, 2, 3, 4]) await ctl.publishAsync(cmd('site-cap'), `cmd-${n}`, { qos: 1 });
      await ctl.endAsync();
      expect(
        await rb.broker.metrics.value('outpost_broker_queue_dropped_total', { client: 'site-cap' }),
      ).toBe(2);
      expect(await rb.rejects('queue-full')).toBe(2);
      const again = await site(rb, 'site-cap');
      await waitFor(() => again.got.length === 2, { message: 'capped queue delivered' });
      await sleep(200);
      expect(again.got).toEqual(['cmd-1', 'cmd-2']);
      await again.c.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('a refused filter in the same SUBSCRIBE as a granted one is not stored in the session', async () => {
    const rb = await startBroker(undefined, { ...PLAIN, dataDir: tmpDir('data') });
    try {
      const s = await client(rb, { clientId: 'site-a', clean: false });
      const granted = await s
        .subscribeAsync([cmd('site-a'), cmd('site-b')], { qos: 1 })
        .catch((e: { packet?: { granted?: number[] } }) => e.packet?.granted);
      expect(granted).toEqual([1, 128]);
      await s.endAsync();
      const ctl = await controller(rb);
      await ctl.publishAsync(cmd('site-b'), 'for-b', { qos: 1 });
      await ctl.publishAsync(cmd('site-a'), 'for-a', { qos: 1 });
      await ctl.endAsync();
      expect(await rb.broker.metrics.value('outpost_broker_queued_messages', { client: 'site-a' })).toBe(1);
      const again = await site(rb, 'site-a');
      await waitFor(() => again.got.includes('for-a'), { message: 'own cmd delivered' });
      await sleep(200);
      expect(again.got).toEqual(['for-a']);
      await again.c.endAsync();
    } finally {
      await rb.close();
    }
  });

  it('abandoned sessions expire through broker.expireSessions() and are counted (I8)', async () => {
    let now = Date.now();
    const data = tmpDir('data');
    const persistence = createSqlitePersistence({
      path: join(data, DB_FILE),
      now: () => now,
      sessionExpiryMs: 60_000,
    });
    const rb = await startBroker(undefined, PLAIN, { persistence });
    try {
      const s = await client(rb, { clientId: 'site-gone', clean: false });
      await s.subscribeAsync(cmd('site-gone'), { qos: 1 });
      await s.endAsync();
      const ctl = await controller(rb);
      await ctl.publishAsync(cmd('site-gone'), 'never-read', { qos: 1 });
      await ctl.endAsync();
      expect(rb.broker.expireSessions()).toMatchObject({ sessions: 0 });
      now += 120_000;
      expect(rb.broker.expireSessions()).toMatchObject({ sessions: 1, messages: 1 });
      expect(await rb.broker.metrics.value('outpost_broker_sessions_expired_total')).toBe(1);
      const back = await site(rb, 'site-gone');
      expect(back.sessionPresent).toBe(false);
      await sleep(200);
      expect(back.got).toEqual([]);
      await back.c.endAsync();
    } finally {
      await rb.close();
    }
  });
});

/**
 * I8 Bounded: per-client queue caps (drop the newest, count it, report it) and expiry of
 * abandoned persistent sessions, at the persistence API and through a real aedes broker.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEFAULT_SESSION_EXPIRY_MS,
  type QueueDropEvent,
  type SqlitePersistence,
} from '../../broker/src/persistence/index.js';
import { connectInbox, sleep, startBroker, waitFor } from './fixtures/mqtt-helpers.js';
import { collect, FakeBroker, open, publish, type TempDb, tempDb } from './fixtures/persistence-helpers.js';

const DAY = 24 * 60 * 60 * 1000;
const CMD = 'outpost/v1/site/site-a/cmd';

let tmp: TempDb;
const opened: SqlitePersistence[] = [];

async function track(p: Promise<SqlitePersistence>): Promise<SqlitePersistence> {
  const instance = await p;
  opened.push(instance);
  return instance;
}

beforeEach(() => {
  tmp = tempDb();
});

afterEach(async () => {
  for (const p of opened.splice(0)) await p.close();
  tmp.remove();
});

describe('queue caps (I8)', () => {
  it('refuses the newest message beyond maxMessages, counts and reports it, keeps the oldest', async () => {
    const drops: QueueDropEvent[] = [];
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const p = await track(
      open(tmp.path, { queueLimits: { maxMessages: 3 }, onDrop: (e) => drops.push(e), log: pino(sink) }),
    );
    for (let i = 1; i <= 5; i++) {
      await p.outgoingEnqueueCombi(
        [{ clientId: 'site-a' }, { clientId: 'site-b' }],
        publish(CMD, `m${i}`, i),
      );
    }
    const queued = await collect(p.outgoingStream({ id: 'site-a' }));
    expect(queued.map((m) => String(m.payload))).toEqual(['m1', 'm2', 'm3']);
    expect(drops.map((d) => [d.clientId, d.reason, d.queuedMessages])).toEqual([
      ['site-a', 'max-messages', 3],
      ['site-b', 'max-messages', 3],
      ['site-a', 'max-messages', 3],
      ['site-b', 'max-messages', 3],
    ]);
    const bytes = CMD.length + 2;
    expect(p.stats()).toEqual({
      clients: 2,
      messages: 6,
      bytes: 6 * bytes,
      droppedMessages: 4,
      droppedBytes: 4 * bytes,
      expiredSessions: 0,
    });
    expect(p.allQueueStats()).toEqual(
      new Map([
        ['site-a', { messages: 3, bytes: 3 * bytes }],
        ['site-b', { messages: 3, bytes: 3 * bytes }],
      ]),
    );
    // an acknowledged message makes room for one more
    await p.outgoingUpdate({ id: 'site-a' }, { ...publish(CMD, 'm1', 1), messageId: 1 });
    await p.outgoingClearMessageId({ id: 'site-a' }, { messageId: 1 });
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, 'm6', 6));
    expect(p.queueStats('site-a').messages).toBe(3);
    expect(drops).toHaveLength(4);
    // logged once per client and episode, with ids and topic, never the payload
    const warnings = lines.filter((l) => l.includes('outgoing queue full'));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain('"clientId":"site-a"');
    expect(warnings[0]).toContain('"component":"broker.persistence"');
    expect(lines.join('')).not.toMatch(/"m[1-6]"|payload/);
  });

  it('refuses a message that would take the queue past maxBytes, and the cap holds after a reopen', async () => {
    let p = await track(open(tmp.path, { queueLimits: { maxBytes: 100 } }));
    const big = 'x'.repeat(60 - CMD.length); // 60 bytes with the topic
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, big, 1));
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, big, 2)); // 120 > 100: dropped
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, 'small', 3)); // 60 + 31: fits
    expect(p.queueStats('site-a')).toEqual({ messages: 2, bytes: 60 + CMD.length + 5 });
    await p.close();

    const drops: QueueDropEvent[] = [];
    p = await track(open(tmp.path, { queueLimits: { maxBytes: 100 }, onDrop: (e) => drops.push(e) }));
    expect(p.queueStats('site-a')).toEqual({ messages: 2, bytes: 60 + CMD.length + 5 }); // counted from disk
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, 'small', 4));
    expect(drops).toEqual([
      {
        clientId: 'site-a',
        topic: CMD,
        bytes: CMD.length + 5,
        reason: 'max-bytes',
        queuedMessages: 2,
        queuedBytes: 91,
      },
    ]);
  });

  it('a refused message can still be delivered live: its outgoingUpdate is not an error', async () => {
    const p = await track(open(tmp.path, { queueLimits: { maxMessages: 1 } }));
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, 'kept', 1));
    await p.outgoingEnqueue({ clientId: 'site-a' }, publish(CMD, 'refused', 2));
    await expect(
      p.outgoingUpdate({ id: 'site-a' }, { ...publish(CMD, 'refused', 2), messageId: 9 }),
    ).resolves.toBeUndefined();
    await expect(
      p.outgoingUpdate({ id: 'site-a' }, { ...publish(CMD, 'never', 3), messageId: 10 }),
    ).rejects.toThrow('no such packet');
  });

  it('rejects nonsensical limits at construction', async () => {
    await expect(open(tmp.path, { queueLimits: { maxMessages: 0 } })).rejects.toThrow(TypeError);
    await expect(open(tmp.path, { sessionExpiryMs: -1 })).rejects.toThrow(TypeError);
  });

  it('through aedes: the offline site gets the first N, the publisher is acknowledged for all', async () => {
    const drops: QueueDropEvent[] = [];
    const p = await open(tmp.path, { queueLimits: { maxMessages: 2 }, onDrop: (e) => drops.push(e) });
    const broker = await startBroker(p);
    try {
      const site = connectInbox(broker.port, { clientId: 'site-a', clean: false });
      await site.connected;
      await site.client.subscribeAsync(CMD, { qos: 1 });
      await site.close();
      const pub = connectInbox(broker.port, { clientId: 'controller', clean: true });
      await pub.connected;
      for (let i = 1; i <= 5; i++) await pub.client.publishAsync(CMD, `c${i}`, { qos: 1 });
      expect(pub.client.connected).toBe(true); // a full queue never costs the publisher its connection
      await pub.close();
      expect(drops.map((d) => d.clientId)).toEqual(['site-a', 'site-a', 'site-a']);

      const again = connectInbox(broker.port, { clientId: 'site-a', clean: false });
      await again.connected;
      await waitFor(() => again.received.length >= 2, 5_000, 'the queued commands');
      await sleep(300);
      expect(again.received.map((r) => r.payload)).toEqual(['c1', 'c2']);
      await again.close();
    } finally {
      await broker.close();
    }
  });
});

describe('session expiry (I8)', () => {
  it('deletes sessions idle for longer than sessionExpiryMs, and nothing else', async () => {
    let clock = 1_000 * DAY;
    const t0 = clock;
    const p = await track(open(tmp.path, { now: () => clock }));
    const seed = async (id: string) => {
      await p.addSubscriptions({ id }, [{ topic: `outpost/v1/site/${id}/cmd`, qos: 1 }]);
      await p.outgoingEnqueue({ clientId: id }, publish(`outpost/v1/site/${id}/cmd`, 'c', 1));
      await p.incomingStorePacket({ id }, { ...publish('x', 'y', 0), qos: 2, messageId: 1 });
    };
    await seed('site-a');
    clock = t0 + 20 * DAY;
    await seed('site-b');

    expect(p.expireSessions(t0 + 29 * DAY)).toEqual({ sessions: 0, messages: 0, clientIds: [] });
    expect(p.expireSessions(t0 + 31 * DAY)).toEqual({
      sessions: 1,
      messages: 1,
      clientIds: ['site-a'],
    });
    expect(await p.subscriptionsByClient({ id: 'site-a' })).toEqual([]);
    expect(await p.subscriptionsByTopic('outpost/v1/site/site-a/cmd')).toEqual([]);
    expect(await collect(p.outgoingStream({ id: 'site-a' }))).toEqual([]);
    await expect(p.incomingGetPacket({ id: 'site-a' }, { messageId: 1 })).rejects.toThrow();
    expect(await p.subscriptionsByClient({ id: 'site-b' })).toHaveLength(1);
    expect(p.queueStats('site-b').messages).toBe(1);
    expect(p.stats()).toMatchObject({ expiredSessions: 1, clients: 1, messages: 1 });
    await p.close();
    // and it stays deleted
    const reopened = await track(open(tmp.path));
    expect(await reopened.subscriptionsByClient({ id: 'site-a' })).toEqual([]);
    expect(reopened.sessionLastSeen('site-b')).toBe(t0 + 20 * DAY);
  });

  it('never expires a connected client; its disconnect time starts the clock', async () => {
    let clock = 0;
    const broker = new FakeBroker('broker-1');
    const p = await track(open(tmp.path, { now: () => clock, sessionExpiryMs: 10 * DAY }, broker));
    await p.addSubscriptions({ id: 'site-a' }, [{ topic: CMD, qos: 1 }]);
    broker.emit('client', { id: 'site-a', clean: false });
    expect(p.expireSessions(100 * DAY).sessions).toBe(0);
    clock = 50 * DAY;
    broker.emit('clientDisconnect', { id: 'site-a', clean: false });
    expect(p.sessionLastSeen('site-a')).toBe(50 * DAY);
    expect(p.expireSessions(59 * DAY).sessions).toBe(0);
    expect(p.expireSessions(61 * DAY).clientIds).toEqual(['site-a']);
  });

  it('defaults to 30 days', async () => {
    expect(DEFAULT_SESSION_EXPIRY_MS).toBe(30 * DAY);
    const p = await track(open(tmp.path, { now: () => 0 }));
    await p.addSubscriptions({ id: 'site-a' }, [{ topic: CMD, qos: 1 }]);
    expect(p.expireSessions(30 * DAY - 1).sessions).toBe(0);
    expect(p.expireSessions(30 * DAY + 1).sessions).toBe(1);
  });

  it('through aedes: an expired session is gone at the next connect; a connected one is kept', async () => {
    const p = await open(tmp.path);
    const broker = await startBroker(p);
    try {
      const a = connectInbox(broker.port, { clientId: 'site-a', clean: false });
      await a.connected;
      await a.client.subscribeAsync(CMD, { qos: 1 });
      await a.close();
      const b = connectInbox(broker.port, { clientId: 'site-b', clean: false });
      await b.connected;
      await b.client.subscribeAsync('outpost/v1/site/site-b/cmd', { qos: 1 });
      await waitFor(() => p.sessionLastSeen('site-a') !== undefined, 2_000, 'site-a session');

      expect(p.expireSessions(Date.now() + 31 * DAY).clientIds).toEqual(['site-a']);
      const again = connectInbox(broker.port, { clientId: 'site-a', clean: false });
      expect((await again.connected).sessionPresent).toBe(false);
      await again.close();
      expect(await p.subscriptionsByClient({ id: 'site-b' })).toHaveLength(1);
      await b.close();
    } finally {
      await broker.close();
    }
  });
});

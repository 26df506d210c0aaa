/**
 * I5 / I1 across kill -9 of the broker: a QoS 1 command the broker has PUBACKed to the publisher
 * is on disk, and is delivered to the offline persistent subscriber after the broker restarts on
 * the same SQLite file — exactly once. The broker runs in a child process
 * (fixtures/broker-launcher.ts: aedes + SQLite persistence, plain TCP on 127.0.0.1).
 * With the subscriber connected, its PUBACKs delete rows whose packets the row cache held
 * (ADR 0008): a kill -9 in the middle of that loses no message it had not acknowledged.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChildBroker, connectInbox, sleep, startChildBroker, waitFor } from './fixtures/mqtt-helpers.js';

const TOPIC = 'outpost/v1/site/site-a/cmd';
const SITE = { clientId: 'site-a', clean: false } as const;

const dir = mkdtempSync(join(tmpdir(), 'outpost-kill-'));
const children = new Set<ChildBroker>();

async function start(db: string): Promise<ChildBroker> {
  const b = await startChildBroker(db);
  children.add(b);
  return b;
}

async function kill9(b: ChildBroker): Promise<void> {
  b.child.kill('SIGKILL');
  const { signal } = await b.exited;
  expect(signal).toBe('SIGKILL');
  children.delete(b);
}

async function stop(b: ChildBroker): Promise<void> {
  b.child.kill('SIGTERM');
  await b.exited;
  children.delete(b);
}

/** Subscribes `site-a` (clean=false, QoS 1) and disconnects, leaving a persistent session. */
async function leaveOfflineSession(port: number): Promise<void> {
  const sub = connectInbox(port, SITE);
  await sub.connected;
  await sub.client.subscribeAsync(TOPIC, { qos: 1 });
  await sub.close();
}

/** Reconnects `site-a` and collects what the broker delivers until `expected` arrive, then 500 ms more. */
async function drain(
  port: number,
  expected: number,
): Promise<{ payloads: string[]; sessionPresent: boolean }> {
  const sub = connectInbox(port, SITE);
  const { sessionPresent } = await sub.connected;
  await waitFor(() => sub.received.length >= expected, 15_000, `${expected} messages`);
  await sleep(500); // anything beyond `expected` now would be a duplicate
  await sub.close();
  return { payloads: sub.received.map((r) => r.payload), sessionPresent };
}

beforeAll(() => {
  expect(dir).toBeTruthy();
});

afterAll(async () => {
  for (const b of children) {
    b.child.kill('SIGKILL');
    await b.exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('broker kill -9 (SQLite persistence)', () => {
  it('I5: 50 PUBACKed QoS 1 messages survive SIGKILL and are delivered exactly once', async () => {
    const db = join(dir, 'kill-after-acks.db');
    const N = 50;
    let broker = await start(db);
    await leaveOfflineSession(broker.port);

    const pub = connectInbox(broker.port, { clientId: 'controller', clean: true });
    await pub.connected;
    const payloads = Array.from({ length: N }, (_, i) => `cmd-${String(i).padStart(3, '0')}`);
    // All in flight at once: aedes handles a socket read's packets concurrently.
    await Promise.all(payloads.map((p) => pub.client.publishAsync(TOPIC, p, { qos: 1 })));
    await kill9(broker); // straight after the last PUBACK, no grace
    pub.client.end(true);

    broker = await start(db);
    const { payloads: got, sessionPresent } = await drain(broker.port, N);
    expect(sessionPresent).toBe(true);
    expect(got.length).toBe(N); // no duplicate
    expect([...got].sort()).toEqual(payloads); // no loss
    expect(got).toEqual(payloads); // and in publish order
    await stop(broker);
  });

  it('I5: SIGKILL in the middle of a burst loses no acknowledged message and duplicates none', async () => {
    const db = join(dir, 'kill-mid-burst.db');
    const N = 400;
    let broker = await start(db);
    await leaveOfflineSession(broker.port);

    const pub = connectInbox(broker.port, { clientId: 'controller', clean: true });
    await pub.connected;
    pub.client.on('error', () => {}); // the broker vanishes under it
    const acked = new Set<string>();
    const payloads = Array.from({ length: N }, (_, i) => `burst-${String(i).padStart(4, '0')}`);
    for (const p of payloads) {
      pub.client.publishAsync(TOPIC, p, { qos: 1 }).then(
        () => acked.add(p),
        () => {},
      );
    }
    await waitFor(() => acked.size >= N / 4, 15_000, 'a quarter of the PUBACKs');
    await kill9(broker);
    const ackedAtKill = new Set(acked); // no PUBACK can arrive after the kill
    pub.client.end(true);
    expect(ackedAtKill.size).toBeGreaterThan(0);

    broker = await start(db);
    const { payloads: got } = await drain(broker.port, ackedAtKill.size);
    const unique = new Set(got);
    expect(unique.size).toBe(got.length); // no duplicate
    for (const p of ackedAtKill) expect(unique.has(p), `acknowledged ${p} was lost`).toBe(true);
    for (const p of got) expect(payloads).toContain(p);
    await stop(broker);
  });

  it('I5: SIGKILL while a connected subscriber acknowledges deliveries loses nothing, redelivers in order, duplicates nothing after the restart', async () => {
    const db = join(dir, 'kill-live.db');
    const N = 400;
    let broker = await start(db);
    const live = connectInbox(broker.port, SITE);
    await live.connected;
    live.client.on('error', () => {});
    await live.client.subscribeAsync(TOPIC, { qos: 1 });

    const pub = connectInbox(broker.port, { clientId: 'controller', clean: true });
    await pub.connected;
    pub.client.on('error', () => {});
    const acked = new Set<string>();
    const payloads = Array.from({ length: N }, (_, i) => `live-${String(i).padStart(4, '0')}`);
    for (const p of payloads) {
      pub.client.publishAsync(TOPIC, p, { qos: 1 }).then(
        () => acked.add(p),
        () => {},
      );
    }
    await waitFor(
      () => acked.size >= N / 4 && live.received.length >= N / 4,
      15_000,
      'a quarter of the PUBACKs and deliveries',
    );
    await kill9(broker);
    const ackedAtKill = new Set(acked);
    const before = new Set(live.received.map((r) => r.payload));
    pub.client.end(true);
    live.client.end(true);

    broker = await start(db);
    const again = connectInbox(broker.port, SITE);
    const { sessionPresent } = await again.connected;
    expect(sessionPresent).toBe(true);
    const seen = (): Set<string> => new Set([...before, ...again.received.map((r) => r.payload)]);
    await waitFor(
      () => [...ackedAtKill].every((p) => seen().has(p)),
      15_000,
      'every acknowledged message, before the kill or after the restart',
    );
    await sleep(500); // a duplicate would arrive now
    await again.close();
    const after = again.received.map((r) => r.payload);
    expect(new Set(after).size).toBe(after.length); // no duplicate after the restart
    expect(after).toEqual([...after].sort()); // the queue is redelivered in publish order
    for (const p of after) expect(payloads).toContain(p);
    for (const p of ackedAtKill) expect(seen().has(p), `acknowledged ${p} was lost`).toBe(true);
    await stop(broker);
  });
});

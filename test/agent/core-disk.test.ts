/**
 * Disk full (I5): a command that cannot be committed is not PUBACKed. The broker keeps it; the agent
 * raises `disk-full` (visible to SCADA although the database cannot take it) and, when space returns,
 * reconnects so the broker redelivers what it withheld.
 */
import { afterEach, beforeEach, expect, test } from 'vitest';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { sleep, waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent } from './helpers/harness.js';

let broker: TestBroker;
let ctl: TestController;
let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;

beforeEach(async () => {
  broker = await startTestBroker();
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
});

test('free space below the threshold: no PUBACK, disk-full alarm; space back: redelivered and applied once', async () => {
  const site = makeSite('site-a');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
  let free = 10 * 1024 * 1024 * 1024;
  running = await startAgent(
    site,
    { broker: broker.url, diskMinFreeBytes: 64 * 1024 * 1024, diskCheckMs: 100 },
    { diskFree: () => free },
  );
  const { agent, memory } = running;
  await waitFor(() => agent.status().connected, { message: 'connected' });
  // count PUBACKs the broker receives from the agent for command messages
  let pubacks = 0;
  broker.aedes.on('ack', (packet, client) => {
    if (client?.id === 'site-a' && 'topic' in packet && packet.topic === ctl.topics.cmd('site-a')) pubacks++;
  });

  free = 1024 * 1024;
  await ctl.apply('hist', 1);
  await waitFor(() => agent.status().alarms.find((a) => a.code === 'disk-full'), {
    message: 'disk-full alarm',
  });
  await waitFor(() => ctl.latestStatus()?.alarms?.some((a) => a.code === 'disk-full'), {
    message: 'SCADA sees it',
  });
  await sleep(500);
  expect(pubacks).toBe(0);
  expect(ctl.acks).toEqual([]);
  expect(agent.status().contig).toBe(0);

  free = 10 * 1024 * 1024 * 1024;
  await ctl.waitStatus(1, 'applied', 15_000);
  expect(pubacks).toBeGreaterThanOrEqual(1);
  expect(memory.effects.filter((e) => e.op === 'create')).toHaveLength(1);
  await waitFor(() => !agent.status().alarms.some((a) => a.code === 'disk-full'), { message: 'cleared' });
}, 30_000);

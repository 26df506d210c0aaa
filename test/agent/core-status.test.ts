/**
 * I10 (status is true): the retained SCADA status (JSON, [PAY-STATUS]) carries stacks, alarms, its
 * time and the control-plane age; a stale control plane (no signed message for K heartbeat intervals)
 * raises `stale-control-plane` and a heartbeat clears it; the last will marks the site offline.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { check, type SiteStatus, SiteStatusSchema } from '../../protocol/src/index.js';
import { spawnNode, waitFor } from '../helpers/index.js';
import type { ChildSpec } from './helpers/agent-child.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { FAST, makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-a');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
});

afterEach(async () => {
  await running?.close();
  running = undefined;
  await ctl.close();
  await broker.close();
});

/** What a SCADA client that subscribes now receives (the retained status). */
async function retainedStatus(): Promise<SiteStatus> {
  const c = await mqtt.connectAsync(broker.url, {
    clientId: `scada-${Date.now()}`,
    clean: true,
    protocolVersion: 4,
  });
  try {
    const got = new Promise<SiteStatus>((resolve) => {
      c.on('message', (_t, p, packet) => {
        if (packet.retain) resolve(JSON.parse(p.toString('utf8')) as SiteStatus);
      });
    });
    await c.subscribeAsync(ctl.topics.status('site-a'), { qos: 1 });
    return await Promise.race([
      got,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no retained status')), 5000)),
    ]);
  } finally {
    await c.endAsync(true);
  }
}

describe('SCADA status', () => {
  test('retained, schema-valid, with stacks, alarms, ts and control age', async () => {
    running = await startAgent(site, { broker: broker.url });
    await waitFor(() => running?.agent.status().connected, { message: 'connected' });
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    const s = await waitFor(async () => {
      const r = await retainedStatus();
      return r.stacks?.['hist']?.running === 1 ? r : undefined;
    });
    check(SiteStatusSchema, s, 'status');
    expect(s).toMatchObject({ v: 1, site: 'site-a', online: true, lastSeq: 1 });
    expect(s.stacks?.['hist']).toEqual({ desired: 1, running: 1, health: 'healthy' });
    expect(Date.now() - Date.parse(s.ts)).toBeLessThan(10_000);
    expect(s.controlAge).toBeGreaterThanOrEqual(0);
    expect(s.agent).toMatch(/^outpost-agent\//);
  });

  test('clean shutdown leaves a retained offline status (reason shutdown)', async () => {
    running = await startAgent(site, { broker: broker.url });
    await waitFor(() => running?.agent.status().connected, { message: 'connected' });
    await running.close();
    const s = await retainedStatus();
    expect(s).toMatchObject({ online: false, reason: 'shutdown' });
  });

  test('SIGKILLed agent: the last will marks the site offline (connection-lost)', async () => {
    const file = join(site.dir, 'child.json');
    const spec: ChildSpec = {
      config: {
        site: 'site-a',
        broker: broker.url,
        certsDir: site.pki.certsDir,
        dataDir: join(site.dir, 'data'),
        ...FAST,
      },
      effectLog: join(site.dir, 'effects.jsonl'),
      restore: 'running',
    };
    writeFileSync(file, JSON.stringify(spec));
    const child = spawnNode('test/agent/helpers/agent-child.ts', [file]);
    await child.waitForOutput('"msg":"subscribed"');
    await waitFor(async () => (await retainedStatus()).online, { message: 'online' });
    await child.kill('SIGKILL');
    const s = await waitFor(async () => {
      const r = await retainedStatus();
      return r.online ? undefined : r;
    });
    expect(s).toMatchObject({ v: 1, site: 'site-a', online: false, reason: 'connection-lost' });
    check(SiteStatusSchema, s, 'will');
  }, 60_000);
});

describe('control-plane freshness', () => {
  test('no heartbeat for K intervals -> stale-control-plane; a heartbeat clears it', async () => {
    running = await startAgent(site, { broker: broker.url, heartbeatIntervalSec: 1, heartbeatMissed: 2 });
    const { agent } = running;
    await waitFor(() => agent.status().connected, { message: 'connected' });
    await ctl.send('heartbeat', { last: 1 });
    await ctl.waitStatus(1, 'applied');
    expect(agent.status().alarms.some((a) => a.code === 'stale-control-plane')).toBe(false);
    await waitFor(() => agent.status().alarms.find((a) => a.code === 'stale-control-plane'), {
      timeoutMs: 6000,
      message: 'stale alarm',
    });
    // visible to SCADA and to the controller
    await waitFor(() => ctl.latestStatus()?.alarms?.some((a) => a.code === 'stale-control-plane'), {
      message: 'status',
    });
    await waitFor(() => ctl.states.at(-1)?.alarms.some((a) => a.code === 'stale-control-plane'), {
      message: 'state',
    });
    const age = await waitFor(() => {
      const a = ctl.latestStatus()?.controlAge;
      return a !== undefined && a >= 2 ? a : undefined;
    });
    expect(age).toBeGreaterThanOrEqual(2);
    await ctl.send('heartbeat', { last: 2 });
    await ctl.waitStatus(2, 'applied');
    await waitFor(() => !agent.status().alarms.some((a) => a.code === 'stale-control-plane'), {
      message: 'cleared',
    });
    await waitFor(() => ctl.latestStatus()?.alarms?.every((a) => a.code !== 'stale-control-plane'), {
      message: 'status cleared',
    });
  });
});

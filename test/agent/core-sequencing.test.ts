/**
 * I3 (order, gaps) and I4 (latest wins) through a real broker with persistent sessions.
 */

import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { sleep, waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

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

async function start(overrides: Record<string, unknown> = {}, memory?: MemoryRuntime) {
  running = await startAgent(site, { broker: broker.url, ...overrides }, memory ? { runtime: memory } : {});
  await waitFor(() => running?.agent.status().connected, { message: 'agent connected' });
  return running;
}

const creates = (m: MemoryRuntime) =>
  m.effects.filter((e) => e.op === 'create').map((e) => `${e.stack}@${e.rev}`);

describe('I3: order and gaps', () => {
  test('seq 3 before seq 2: held, then both applied in seq order when 2 arrives', async () => {
    const r = await start();
    const c1 = ctl.applyCmd('a', 1);
    const c2 = ctl.applyCmd('a', 2, spec(['web'], 2));
    const c3 = ctl.applyCmd('b', 1);
    await ctl.publish(c1);
    await ctl.waitStatus(1, 'applied');
    await ctl.publish(c3);
    await ctl.waitStatus(3, 'accepted');
    await sleep(400);
    // held: journalled and accepted, not applied
    expect(ctl.acksFor(3).map((a) => a.st)).toEqual(['accepted']);
    expect(creates(r.memory)).toEqual(['a@1']);
    expect(r.agent.status().contig).toBe(1);
    await ctl.publish(c2);
    await ctl.waitStatus(2, 'applied');
    await ctl.waitStatus(3, 'applied');
    // [ORD-1]: in seq order per stack; stacks a and b run in their own queues ([ORD-5]), so the
    // order between a@2 and b@1 is not defined once both are released.
    const made = creates(r.memory);
    expect(made.filter((c) => c.startsWith('a@'))).toEqual(['a@1', 'a@2']);
    expect(made.filter((c) => c.startsWith('b@'))).toEqual(['b@1']);
    expect(made).toHaveLength(3);
    expect(r.agent.status().contig).toBe(3);
    expect(r.agent.status().alarms.some((a) => a.code === 'seq-gap')).toBe(false);
  });

  test('gap hold expiry: seq-gap alarm, proceed past the gap; the late arrival is a replay', async () => {
    const r = await start({ gapHoldMs: 600 });
    const c1 = ctl.applyCmd('a', 1);
    const c2 = ctl.applyCmd('a', 2, spec(['web'], 2));
    const c3 = ctl.applyCmd('a', 3, spec(['web'], 3));
    await ctl.publish(c1);
    await ctl.waitStatus(1, 'applied');
    await ctl.publish(c3);
    const applied = await ctl.waitStatus(3, 'applied', 5000);
    expect(applied.rev).toBe(3);
    const alarm = r.agent.status().alarms.find((a) => a.code === 'seq-gap');
    expect(alarm?.msg).toContain('seq 2 missing');
    await waitFor(() => ctl.latestStatus()?.alarms?.some((a) => a.code === 'seq-gap'), {
      message: 'SCADA sees seq-gap',
    });
    await ctl.publish(c2);
    const late = await ctl.waitStatus(2, 'rejected');
    expect(late.rc).toBe('replay');
    expect(creates(r.memory)).toEqual(['a@1', 'a@3']);
    // a heartbeat showing the agent has everything clears the alarm
    await ctl.send('heartbeat', { last: 4 });
    await ctl.waitStatus(4, 'applied');
    await waitFor(() => !r.agent.status().alarms.some((a) => a.code === 'seq-gap'), {
      message: 'seq-gap cleared',
    });
  });

  test('controller-collapsed commands leave no gap (prev links the published ones)', async () => {
    const r = await start({ gapHoldMs: 60_000 });
    await ctl.publish(ctl.applyCmd('a', 1, spec(), { seq: 1, prev: 0 }));
    // seqs 2..4 were collapsed by the controller and never published
    await ctl.publish(ctl.applyCmd('a', 5, spec(['web'], 5), { seq: 5, prev: 1 }));
    await ctl.waitStatus(5, 'applied', 3000);
    expect(r.agent.status().contig).toBe(5);
  });
});

describe('I4: latest wins', () => {
  test('offline for 20 revisions of one stack: on reconnect only the newest is applied, older superseded', async () => {
    // the engine outlives the agent: both runtimes share an effect log (restore = containers still running)
    const effectLog = join(site.dir, 'effects.jsonl');
    const r = await start({ settleMs: 300 }, new MemoryRuntime({ reconcileIntervalMs: 200, effectLog }));
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    await r.close();
    // the agent is gone; its persistent session keeps collecting QoS 1 commands at the broker
    for (let rev = 2; rev <= 21; rev++) await ctl.apply('hist', rev, spec(['web'], rev));
    const again = await start(
      { settleMs: 300 },
      new MemoryRuntime({ reconcileIntervalMs: 200, effectLog, restore: 'running' }),
    );
    await ctl.waitStatus(21, 'applied', 10_000);
    for (let seq = 2; seq <= 20; seq++) {
      const sts = ctl.acksFor(seq).map((a) => a.st);
      expect(sts, `seq ${seq}`).toEqual(['accepted', 'superseded']);
    }
    expect(creates(again.memory)).toEqual(['hist@21']);
    expect(again.agent.status().applied).toBe(21);
  });

  test('a newer stack.remove supersedes a pending apply of the same stack; other stacks unaffected', async () => {
    const r = await start({ settleMs: 400 });
    await ctl.apply('a', 1);
    await ctl.apply('b', 1);
    await ctl.send('stack.remove', { stack: 'a' });
    await ctl.waitStatus(3, 'applied');
    await ctl.waitStatus(2, 'applied');
    expect(ctl.acksFor(1).map((x) => x.st)).toEqual(['accepted', 'superseded']);
    expect(creates(r.memory)).toEqual(['b@1']);
  });
});

/**
 * Agent core through a real broker: deploy, update, remove, restart; acks arrive signed and verify
 * (openAck with the site's uplink key); per-stack queues; failures and rollbacks.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running:
  | (RunningAgent & { memory: import('../../agent/src/runtime/memory.js').MemoryRuntime })
  | undefined;

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-a');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
  running = await startAgent(site, { broker: broker.url });
  await waitFor(() => running?.agent.status().connected, { message: 'agent connected' });
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
});

describe('deploy, update, remove', () => {
  test('acks accepted then applied, signed by the site and verified; the runtime runs the revision', async () => {
    const memory = running!.memory;
    await ctl.apply('hist', 1, spec(['web', 'db'], 1));
    await ctl.waitStatus(1, 'accepted');
    await ctl.waitStatus(1, 'applied');
    expect(ctl.bad).toEqual([]);
    const accepted = ctl.acksFor(1);
    expect(accepted.map((a) => a.st)).toEqual(['accepted', 'applied']);
    expect(accepted[1]).toMatchObject({ site: 'site-a', type: 'stack.apply', stack: 'hist', rev: 1 });
    // useq increases across the uplink
    expect(accepted[1]!.useq).toBeGreaterThan(accepted[0]!.useq);
    const snap = await memory.snapshot();
    expect(snap).toEqual([expect.objectContaining({ name: 'hist', rev: 1, h: 'healthy' })]);

    // update: only the changed service is replaced (declarative apply)
    await ctl.apply('hist', 2, spec(['web', 'db'], 2));
    await ctl.waitStatus(2, 'applied');
    expect((await memory.snapshot())[0]).toMatchObject({ name: 'hist', rev: 2 });

    await ctl.send('stack.remove', { stack: 'hist' });
    await ctl.waitStatus(3, 'applied');
    expect(await memory.snapshot()).toEqual([]);
    const st = running!.agent.status();
    expect(st.applied).toBe(3);
    expect(st.contig).toBe(3);
  });

  test('state: full snapshot on connect and on state.request; deltas on change', async () => {
    await waitFor(() => ctl.states.find((s) => s.full), { message: 'full state on connect' });
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    const delta = await waitFor(() =>
      ctl.states.find(
        (s) => !s.full && s.stacks.some((x) => x.name === 'hist' && x.rev === 1 && x.want === 1),
      ),
    );
    expect(delta.last).toBeGreaterThanOrEqual(0);
    const before = ctl.states.filter((s) => s.full).length;
    await ctl.send('state.request', { full: true });
    await ctl.waitStatus(2, 'applied');
    const full = await waitFor(() => ctl.states.filter((s) => s.full).at(before));
    expect(full.stacks).toEqual([expect.objectContaining({ name: 'hist', rev: 1, want: 1, h: 'healthy' })]);
    expect(full.trust).toBe(1);
    expect(full.last).toBe(2);
  });

  test('a failing stack does not block another stack (per-stack queues)', async () => {
    const memory = running!.memory;
    memory.setApplyDelay('slow', 1500);
    memory.injectApplyFailure('bad', 'image-unavailable');
    await ctl.apply('slow', 1);
    await ctl.apply('bad', 1);
    await ctl.apply('good', 1);
    const good = await ctl.waitStatus(3, 'applied');
    expect(good.stack).toBe('good');
    const failed = await ctl.waitStatus(2, 'failed');
    expect(failed.rc).toBe('image-unavailable');
    // 'slow' is still running its apply while 'good' is done
    expect(ctl.acksFor(1).map((a) => a.st)).toEqual(['accepted']);
    await ctl.waitStatus(1, 'applied', 10_000);
    await waitFor(() =>
      running!.agent.status().alarms.find((a) => a.code === 'apply-failed' && a.stack === 'bad'),
    );
  });

  test('health gate failure rolls back to the previous revision and raises rolled-back', async () => {
    const memory = running!.memory;
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    memory.injectHealthFailure('hist', 2);
    await ctl.apply('hist', 2);
    const rb = await ctl.waitStatus(2, 'rolled-back');
    expect(rb.rc).toBe('health-timeout');
    expect((await memory.snapshot())[0]).toMatchObject({ name: 'hist', rev: 1 });
    await waitFor(() => running!.agent.status().alarms.find((a) => a.code === 'rolled-back'));
    // the reconciler keeps revision 1 (the desired state was restored, I7)
    await new Promise((r) => setTimeout(r, 500));
    expect((await memory.snapshot())[0]).toMatchObject({ rev: 1 });
    // a later good revision clears the alarm
    memory.clearFailures();
    await ctl.apply('hist', 3);
    await ctl.waitStatus(3, 'applied');
    await waitFor(() => !running!.agent.status().alarms.some((a) => a.code === 'rolled-back'));
  });

  test('restart of an unknown stack fails unknown-stack and touches nothing (I7)', async () => {
    await ctl.send('stack.restart', { stack: 'nope' });
    const f = await ctl.waitStatus(1, 'failed');
    expect(f.rc).toBe('unknown-stack');
    expect(running!.memory.effects).toEqual([]);
  });

  test('restart restarts the running services once', async () => {
    const memory = running!.memory;
    await ctl.apply('hist', 1, spec(['a', 'b'], 1));
    await ctl.waitStatus(1, 'applied');
    await new Promise((r) => setTimeout(r, 5));
    await ctl.send('stack.restart', { stack: 'hist', svc: ['a'] });
    await ctl.waitStatus(2, 'applied');
    expect(memory.effects.filter((e) => e.op === 'restart').map((e) => e.svc)).toEqual(['a']);
  });

  test('reconciler restarts a crashed service (I7)', async () => {
    const memory = running!.memory;
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    memory.crash('hist', 'web');
    await waitFor(async () => (await memory.snapshot())[0]?.svc[0]?.st === 'running', {
      message: 'restarted',
    });
    expect(memory.effects.filter((e) => e.op === 'start')).toHaveLength(2);
  });
});

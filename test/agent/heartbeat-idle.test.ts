/**
 * SPEC [HB-2] (idle wire budget, DESIGN §7) with I3 and I10 intact: a heartbeat that changes nothing
 * but the applied watermark and the control age is answered with its signed ack alone — no state delta,
 * no retained status — and the next status or state published for a real change carries the current
 * `lastSeq`/`last` and control age. Alarm changes a heartbeat causes (`seq-gap` cleared by its `last`)
 * are still published at once. Real broker, real agent (SQLite journal, MemoryRuntime).
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { SiteStatus, State } from '../../protocol/src/index.js';
import { waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running: RunningAgent | undefined;

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-hb');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
});

afterEach(async () => {
  await running?.close();
  running = undefined;
  await ctl.close();
  await broker.close();
});

/** A state message that reports something besides the watermark: a snapshot, stacks or removals. */
const reportsStacks = (s: State) => s.full || s.stacks.length > 0 || (s.gone?.length ?? 0) > 0;
const hist = (s: SiteStatus | undefined) => s?.stacks?.['hist'];

describe('[HB-2] heartbeats to an idle site', () => {
  test('answered by the signed ack alone; the next real change carries the current lastSeq and control age', async () => {
    running = await startAgent(site, { broker: broker.url });
    const { agent } = running;
    await waitFor(() => agent.status().connected, { message: 'connected' });
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    // Settled: the latest state and status show revision 1 healthy at seq 1.
    await waitFor(
      () =>
        hist(ctl.latestStatus())?.health === 'healthy' &&
        ctl.latestStatus()?.lastSeq === 1 &&
        ctl.states.at(-1)?.last === 1 &&
        ctl.states.at(-1)?.stacks.some((s) => s.name === 'hist' && s.rev === 1 && s.h === 'healthy'),
      { message: 'revision 1 reported healthy' },
    );
    const states0 = ctl.states.length;
    const statuses0 = ctl.statuses.length;

    let contact = agent.status().lastContactMs;
    for (const seq of [2, 3, 4]) {
      await ctl.send('heartbeat', { last: seq });
      const ack = await ctl.waitStatus(seq, 'applied');
      expect(ack.type).toBe('heartbeat');
      // The agent recorded the contact and moved its watermark onto the heartbeat's seq.
      expect(agent.status().lastContactMs).toBeGreaterThanOrEqual(contact);
      contact = agent.status().lastContactMs;
      expect(agent.status().applied).toBe(seq);
    }
    expect(agent.status().alarms).toEqual([]);

    // A real change: revision 2. Everything published from here on is about it.
    const sentAt = Date.now();
    await ctl.apply('hist', 2, spec(['web'], 2));
    await ctl.waitStatus(5, 'applied');
    const final = await waitFor(
      () => {
        const s = ctl.latestStatus();
        return hist(s)?.running === 2 && s?.lastSeq === 5 ? s : undefined;
      },
      { message: 'status of revision 2' },
    );
    await waitFor(() => ctl.states.at(-1)?.last === 5, { message: 'state with last = 5' });

    // No status and no state was published for the heartbeats themselves …
    const statuses = ctl.statuses.slice(statuses0);
    const states = ctl.states.slice(states0);
    expect(statuses.length).toBeGreaterThan(0);
    for (const s of statuses) {
      expect(hist(s)?.desired).toBe(2);
      expect([2, 3, 4]).not.toContain(s.lastSeq);
    }
    expect(states.every(reportsStacks)).toBe(true);
    expect(states.every((s) => s.stacks.some((st) => st.name === 'hist' && st.want === 2))).toBe(true);
    // … and the status of the real change carries the current watermark and control age: the
    // command that caused it arrived after `sentAt`, so its age as of `ts` is at most ts − sentAt.
    expect(final.controlAge).toBeDefined();
    expect(final.controlAge!).toBeLessThanOrEqual(Math.ceil((Date.parse(final.ts) - sentAt) / 1000));
    expect(ctl.bad).toEqual([]);
  });

  test('a heartbeat that clears seq-gap publishes the cleared alarm in state and status (I3, I10)', async () => {
    running = await startAgent(site, { broker: broker.url, gapHoldMs: 300 });
    const { agent } = running;
    await waitFor(() => agent.status().connected, { message: 'connected' });
    const c1 = ctl.applyCmd('hist', 1);
    ctl.applyCmd('hist', 2, spec(['web'], 2)); // seq 2: signed, never delivered
    const c3 = ctl.applyCmd('hist', 3, spec(['web'], 3));
    await ctl.publish(c1);
    await ctl.waitStatus(1, 'applied');
    await ctl.publish(c3);
    await ctl.waitStatus(3, 'applied');
    await waitFor(
      () =>
        ctl.latestStatus()?.alarms?.some((a) => a.code === 'seq-gap') &&
        ctl.states.at(-1)?.alarms.some((a) => a.code === 'seq-gap'),
      { message: 'seq-gap in status and state' },
    );

    // The heartbeat's `last` (4) shows the agent has everything the controller published.
    const statuses0 = ctl.statuses.length;
    const states0 = ctl.states.length;
    await ctl.send('heartbeat', { last: 4 }, { seq: 4, prev: 3 });
    await ctl.waitStatus(4, 'applied');
    await waitFor(() => !agent.status().alarms.some((a) => a.code === 'seq-gap'), {
      message: 'seq-gap cleared at the agent',
    });
    // The cleared alarm is a change: it reaches the controller (signed state) and SCADA (status),
    // which then carry the heartbeat's seq as the watermark.
    const status = await waitFor(
      () => {
        const s = ctl.latestStatus();
        return s && !s.alarms?.some((a) => a.code === 'seq-gap') ? s : undefined;
      },
      { message: 'status without seq-gap' },
    );
    expect(status.lastSeq).toBe(4);
    const state = await waitFor(
      () => {
        const s = ctl.states.at(-1);
        return s && !s.alarms.some((a) => a.code === 'seq-gap') ? s : undefined;
      },
      { message: 'state without seq-gap' },
    );
    expect(state.last).toBe(4);
    expect(ctl.statuses.length).toBeGreaterThan(statuses0);
    expect(ctl.states.length).toBeGreaterThan(states0);
  });
});

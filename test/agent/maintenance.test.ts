/**
 * Maintenance windows and update locks enforced by the agent ([MW-4], [MW-5]) through a real broker,
 * real SQLite and the MemoryRuntime, with an injected clock (the window is judged by trusted time).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { encodeSpec, type Maintenance } from '../../protocol/src/index.js';
import { waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;

/** A clock the test moves: real time plus a shift (never behind real time, so trusted time follows it). */
const shift = { ms: 0 };
const clock = { now: () => Date.now() + shift.ms };
const HOUR = 3600_000;

/** A daily UTC window that opens 2 h from now and lasts 1 h (minute-aligned). */
function windowFromNow(): Maintenance {
  const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
  const start = Math.ceil((Date.now() + 2 * HOUR) / 60_000) * 60_000;
  return { tz: 'UTC', w: [{ s: hhmm(start), e: hhmm(start + HOUR) }] };
}
/** Moves the clock into the window of `windowFromNow()`. */
const openWindow = () => {
  shift.ms = 2 * HOUR + 5 * 60_000;
};

const specBytes = (rev: number) => encodeSpec(spec(['web'], rev), 'never').bytes;

const OPTS = { maintenanceRecheckMs: 100, lockPollMs: 100 };

async function start(): Promise<void> {
  running = await startAgent(site, { broker: broker.url, ...OPTS }, { clock });
  await waitFor(() => running?.agent.status().connected, { message: 'agent connected' });
}

beforeEach(async () => {
  shift.ms = 0;
  broker = await startTestBroker();
  site = makeSite('site-mw');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
  await start();
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
});

const rev = async (stack: string) =>
  (await running!.memory.snapshot()).find((s) => s.name === stack)?.rev ?? 0;

describe('[MW-4] maintenance window', () => {
  test('closed window: deferred with the reason; applies offline when it opens; applied acked after reconnect', async () => {
    const mw = windowFromNow();
    await ctl.send('stack.apply', { stack: 'hist', rev: 1, spec: specBytes(1), mw });
    const deferred = await ctl.waitStatus(1, 'deferred');
    expect(deferred).toMatchObject({ rc: 'maintenance-window', stack: 'hist', rev: 1 });
    expect(deferred.msg).toMatch(/window closed/);
    expect(await rev('hist')).toBe(0);
    // The retained status carries the deferred alarm with stack and reason.
    const st = await waitFor(
      () => ctl.statuses.findLast((s) => s.alarms?.some((a) => a.code === 'deferred' && a.stack === 'hist')),
      { message: 'deferred alarm in status' },
    );
    expect(st.alarms?.find((a) => a.code === 'deferred')?.msg).toContain('maintenance-window');
    expect(running!.agent.status().applied).toBe(0);

    // Offline: the broker goes away; the window opens; the agent applies on its own.
    await broker.pause();
    await waitFor(() => !running!.agent.status().connected, { message: 'agent disconnected' });
    openWindow();
    await waitFor(async () => (await rev('hist')) === 1, { timeoutMs: 20_000, message: 'applied offline' });
    expect(running!.agent.status().connected).toBe(false);
    expect(running!.agent.status().applied).toBe(1);
    expect(running!.agent.status().alarms.some((a) => a.code === 'deferred')).toBe(false);

    await broker.resume();
    await ctl.waitStatus(1, 'applied', 20_000);
    // Deferred was acked once, not once per re-check.
    expect(ctl.acksFor(1).filter((a) => a.st === 'deferred')).toHaveLength(1);
    expect(ctl.bad).toEqual([]);
  });

  test('a deferred command survives an agent restart and still applies when the window opens', async () => {
    await ctl.send('stack.apply', { stack: 'hist', rev: 1, spec: specBytes(1), mw: windowFromNow() });
    await ctl.waitStatus(1, 'deferred');
    await running!.close();
    await start();
    expect(await rev('hist')).toBe(0);
    expect(running!.agent.status().queues).toEqual({ hist: 1 });
    openWindow();
    await ctl.waitStatus(1, 'applied', 20_000);
    expect(await rev('hist')).toBe(1);
    expect(ctl.acksFor(1).filter((a) => a.st === 'deferred')).toHaveLength(1);
  });

  test('a newer revision supersedes a deferred one (I4); other stacks are not blocked; force runs now', async () => {
    const mw = windowFromNow();
    await ctl.send('stack.apply', { stack: 'hist', rev: 1, spec: specBytes(1), mw });
    await ctl.waitStatus(1, 'deferred');
    // another stack without a window runs at once
    await ctl.apply('other', 1, spec(['web'], 7));
    await ctl.waitStatus(2, 'applied');
    expect(await rev('other')).toBe(1);
    // a newer revision of hist supersedes the deferred one and is deferred in turn
    await ctl.send('stack.apply', { stack: 'hist', rev: 2, spec: specBytes(2), mw });
    await ctl.waitStatus(1, 'superseded');
    await ctl.waitStatus(3, 'deferred');
    expect(await rev('hist')).toBe(0);
    // force: an emergency revision runs now, through the closed window (and supersedes rev 2)
    await ctl.send('stack.apply', { stack: 'hist', rev: 3, spec: specBytes(3), mw, force: true });
    await ctl.waitStatus(3, 'superseded');
    await ctl.waitStatus(4, 'applied');
    expect(await rev('hist')).toBe(3);
    expect(ctl.acksFor(4).some((a) => a.st === 'deferred')).toBe(false);
    await waitFor(() => !running!.agent.status().alarms.some((a) => a.code === 'deferred'), {
      message: 'deferred alarm cleared',
    });
    // restart and remove obey windows too
    await ctl.send('stack.restart', { stack: 'hist', mw });
    expect((await ctl.waitStatus(5, 'deferred')).rc).toBe('maintenance-window');
  });
});

describe('[MW-5] update lock (MemoryRuntime: the lock folder only)', () => {
  test('a held lock defers `update-lock`; removing it lets the command run', async () => {
    const dir = join(running!.config.locksDir, 'hist');
    expect(running!.config.locksDir).toBe(join(running!.config.dataDir, 'locks'));
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'updates.lock'), '');
    await ctl.apply('hist', 2);
    const d = await ctl.waitStatus(2, 'deferred');
    expect(d.rc).toBe('update-lock');
    // a window that is open does not matter while locked; another stack is not blocked by the lock
    await ctl.apply('other', 1);
    await ctl.waitStatus(3, 'applied');
    expect(await rev('hist')).toBe(1);
    rmSync(join(dir, 'updates.lock'));
    await ctl.waitStatus(2, 'applied');
    expect(await rev('hist')).toBe(2);
    expect(ctl.acksFor(2).filter((a) => a.st === 'deferred')).toHaveLength(1);
  });

  test('the deferral reason changes from window to lock: acked again with the new reason', async () => {
    const dir = join(running!.config.locksDir, 'hist');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'updates.lock'), '');
    await ctl.send('stack.apply', { stack: 'hist', rev: 1, spec: specBytes(1), mw: windowFromNow() });
    expect((await ctl.waitStatus(1, 'deferred')).rc).toBe('maintenance-window');
    openWindow();
    await waitFor(() => ctl.acksFor(1).find((a) => a.st === 'deferred' && a.rc === 'update-lock'), {
      message: 'deferred update-lock',
    });
    rmSync(join(dir, 'updates.lock'));
    await ctl.waitStatus(1, 'applied');
    expect(ctl.acksFor(1).map((a) => `${a.st}${a.rc ? `/${a.rc}` : ''}`)).toEqual([
      'accepted',
      'deferred/maintenance-window',
      'deferred/update-lock',
      'applied',
    ]);
  });
});

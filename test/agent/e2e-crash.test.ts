/**
 * Crash tests with a real child process killed by SIGKILL at named fault points (DESIGN §8), a real
 * broker (in this process, so it outlives the agent) and SQLite on disk. Effects are counted in the
 * MemoryRuntime's effect log, which survives the kill (the "engine" outlives the agent).
 *   I5: PUBACK only after the commit; I2: at most one effect; I7: reboot with no network.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { type Effect, readEffectLog } from '../../agent/src/runtime/memory.js';
import { freePort, type Spawned, spawnNode, waitFor } from '../helpers/index.js';
import type { ChildSpec } from './helpers/agent-child.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { FAST, makeSite, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let effectLog: string;

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-a');
  effectLog = join(site.dir, 'effects.jsonl');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
});

afterEach(async () => {
  await ctl.close();
  await broker.close();
});

function spawnAgent(
  opts: { fault?: string; restore?: ChildSpec['restore']; brokerUrl?: string } = {},
): Spawned {
  const file = join(site.dir, `child-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  const childSpec: ChildSpec = {
    config: {
      site: site.pki.site,
      broker: opts.brokerUrl ?? broker.url,
      certsDir: site.pki.certsDir,
      dataDir: join(site.dir, 'data'),
      ...FAST,
    },
    effectLog,
    restore: opts.restore ?? 'running',
  };
  writeFileSync(file, JSON.stringify(childSpec));
  return spawnNode('test/agent/helpers/agent-child.ts', [file], { OUTPOST_FAULT_POINT: opts.fault });
}

const creates = (effects: Effect[]) =>
  effects.filter((e) => e.op === 'create').map((e) => `${e.stack}/${e.svc}@${e.rev}`);

describe('SIGKILL at fault points: exactly one effect after restart', () => {
  test('I5: killed after the journal commit, before the PUBACK: redelivered, deduped, applied once', async () => {
    const first = spawnAgent({ fault: 'agent.after-commit-before-puback' });
    await first.waitForOutput('"msg":"subscribed"');
    await ctl.apply('hist', 1, spec(['web', 'db'], 1));
    const exit = await first.exited;
    expect(exit.signal).toBe('SIGKILL');
    expect(first.output()).toContain('"msg":"command journalled"');
    expect(readEffectLog(effectLog)).toEqual([]);

    const second = spawnAgent();
    await ctl.waitStatus(1, 'applied', 15_000);
    // the broker redelivered the un-PUBACKed command; the journal recognised it (I2)
    await second.waitForOutput('duplicate delivery: re-acked');
    expect(creates(readEffectLog(effectLog))).toEqual(['hist/web@1', 'hist/db@1']);
    // executed once; the redelivery was answered with the recorded status
    expect(second.output().match(/"msg":"command finished"/g)).toHaveLength(1);
    await second.kill('SIGTERM');
  }, 60_000);

  test.each([
    ['agent.mid-apply', 'journal says executing, runtime not called'],
    ['runtime.memory.mid-apply', 'first container created, second not'],
    ['agent.after-apply-before-record', 'runtime done, outcome not journalled'],
  ])(
    'I2: killed at %s (%s): resumed, not re-run',
    async (fault) => {
      const first = spawnAgent({ fault });
      await first.waitForOutput('"msg":"subscribed"');
      await ctl.apply('hist', 1, spec(['web', 'db'], 1));
      expect((await first.exited).signal).toBe('SIGKILL');

      const second = spawnAgent();
      await ctl.waitStatus(1, 'applied', 15_000);
      await second.waitForOutput('resuming command interrupted by a crash');
      const effects = readEffectLog(effectLog);
      expect(creates(effects)).toEqual(['hist/web@1', 'hist/db@1']);
      expect(effects.filter((e) => e.op === 'start')).toHaveLength(2);
      expect(effects.filter((e) => e.op === 'remove')).toHaveLength(0);
      expect(second.output().match(/"msg":"command finished"/g)).toHaveLength(1);
      await second.kill('SIGTERM');
    },
    60_000,
  );

  test('I2: a restart interrupted after its journal entry does not restart twice', async () => {
    const first = spawnAgent();
    await first.waitForOutput('"msg":"subscribed"');
    await ctl.apply('hist', 1, spec(['web'], 1));
    await ctl.waitStatus(1, 'applied');
    await first.kill('SIGTERM');
    const second = spawnAgent({ fault: 'agent.after-apply-before-record' });
    await second.waitForOutput('"msg":"subscribed"');
    await ctl.send('stack.restart', { stack: 'hist' });
    expect((await second.exited).signal).toBe('SIGKILL');
    const third = spawnAgent();
    await ctl.waitStatus(2, 'applied', 15_000);
    expect(readEffectLog(effectLog).filter((e) => e.op === 'restart')).toHaveLength(1);
    await third.kill('SIGTERM');
  }, 60_000);
});

describe('I7: reboot with no network', () => {
  test('desired stacks are brought back from the local database by the reconciler', async () => {
    const first = spawnAgent();
    await first.waitForOutput('"msg":"subscribed"');
    await ctl.apply('hist', 1, spec(['web', 'db'], 1));
    await ctl.apply('scada', 3, spec(['opc'], 3));
    await ctl.waitStatus(1, 'applied');
    await ctl.waitStatus(2, 'applied');
    // power loss
    expect((await first.kill('SIGKILL')).signal).toBe('SIGKILL');
    const before = readEffectLog(effectLog).length;
    // reboot: every container stopped, and no broker reachable
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    const second = spawnAgent({ restore: 'stopped', brokerUrl: dead });
    await second.waitForOutput('"msg":"agent started"');
    const after = await waitFor(
      () => {
        const starts = readEffectLog(effectLog)
          .slice(before)
          .filter((e) => e.op === 'start');
        return starts.length === 3 ? starts : undefined;
      },
      { timeoutMs: 10_000, message: 'stacks restarted offline' },
    );
    expect(after.map((e) => `${e.stack}/${e.svc}@${e.rev}`).sort()).toEqual([
      'hist/db@1',
      'hist/web@1',
      'scada/opc@3',
    ]);
    // nothing re-created: the same containers were started again
    expect(
      readEffectLog(effectLog)
        .slice(before)
        .filter((e) => e.op === 'create'),
    ).toEqual([]);
    expect(second.output()).not.toContain('"msg":"connected"');
    await second.kill('SIGTERM');
  }, 60_000);
});

/**
 * Scenario (a): SIGKILL of every component at its named fault points during a stream of deployments,
 * the whole system as child processes (broker, controller, three agents behind fault proxies, TLS,
 * SQLite everywhere). After each fault the component is restarted on the same files, the stream goes
 * on, the system quiesces, and the ledger — every command in the controller's database against every
 * container effect at every site — must be clean:
 *   I1 nothing lost, I2 at most one effect, I3 order per stack, I5 durable before ack.
 *
 * test/agent/e2e-crash.test.ts and test/controller/crash.test.ts prove the same points one component
 * at a time against stand-ins; here the real parts run together, under load, with the ledger as judge.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sleep, waitFor } from '../helpers/index.js';
import { expectCleanLedger } from './harness/assert.js';
import { deployStream } from './harness/stream.js';
import { FaultSystem } from './harness/system.js';

const SITES = ['a1', 'a2', 'a3'];
let sys: FaultSystem;

beforeAll(async () => {
  // A short runtime delay widens the window between "executing" and "recorded".
  sys = await FaultSystem.start({ sites: SITES, applyDelayMs: 30 });
}, 240_000);

afterAll(async () => {
  await sys?.close();
});

describe('agents SIGKILLed at their fault points during a deployment stream', () => {
  test('I5 + I2: after the journal commit before the PUBACK, after the runtime before the record, mid-apply', async () => {
    const armed: Record<string, string> = {
      a1: 'agent.after-commit-before-puback',
      a2: 'agent.after-apply-before-record',
      a3: 'runtime.memory.mid-apply',
    };
    for (const [site, fault] of Object.entries(armed)) {
      await sys.killAgent(site, 'SIGTERM');
      await sys.startAgent(site, { fault });
    }
    const stream = deployStream(sys, SITES);
    const deaths = await Promise.all(
      Object.keys(armed).map(async (site) => {
        const proc = sys.agent(site).proc!;
        const exit = await Promise.race([proc.exited, sleep(60_000).then(() => undefined)]);
        return { site, exit, output: proc.output() };
      }),
    );
    for (const d of deaths) {
      expect(d.exit?.signal, `${d.site} died at ${armed[d.site]}`).toBe('SIGKILL');
      sys.count('agent fault point');
    }
    // Killed after its commit: the command was journalled but never PUBACKed.
    expect(deaths[0]!.output).toContain('"msg":"command journalled"');
    const restarted = await Promise.all(Object.keys(armed).map((site) => sys.startAgent(site)));
    await sleep(3_000);
    await stream.stop();
    await sys.quiesce(90_000);
    // I5: the un-PUBACKed command came back from the broker and the journal recognised it.
    expect(restarted[0]!.output()).toContain('duplicate delivery: re-acked');
    // I2: the interrupted commands were resumed, never re-run from scratch.
    expect(restarted[1]!.output()).toContain('resuming command interrupted by a crash');
    expect(restarted[2]!.output()).toContain('resuming command interrupted by a crash');
    expectCleanLedger(sys.ledger());
  }, 240_000);
});

describe('controller SIGKILLed at its fault points during a deployment stream', () => {
  test.each([
    [
      'controller.after-commit-before-publish',
      'I1 + I5: committed, signed envelopes are sent after the restart',
    ],
    [
      'controller.after-publish-before-record',
      'I2: the resend after the restart is deduplicated by the agents',
    ],
  ])(
    '%s (%s)',
    async (fault) => {
      await sys.killController('SIGTERM');
      // Let a few issue passes succeed first, so the kill lands mid-stream.
      await sys.startController({ fault, skip: 2 });
      const stream = deployStream(sys, SITES);
      const exit = await Promise.race([sys.controller!.exited, sleep(60_000).then(() => undefined)]);
      expect(exit?.signal, `controller died at ${fault}`).toBe('SIGKILL');
      sys.count('controller fault point');
      await sleep(1_000); // deployments meanwhile are refused: not 2xx, not owed
      await sys.startController();
      await waitFor(() => stream.ok >= 4, { timeoutMs: 60_000, message: 'deployments after the restart' });
      await stream.stop();
      await sys.quiesce(90_000);
      expect(stream.down).toBeGreaterThan(0);
      expectCleanLedger(sys.ledger());
    },
    240_000,
  );
});

describe('broker SIGKILLed with messages queued for an offline site', () => {
  test('I5 + I1: what the broker PUBACKed is delivered after its restart; nothing lost, nothing twice', async () => {
    const offline = sys.agent('a3');
    offline.proxy.refuse(true);
    offline.proxy.cut();
    await waitFor(async () => (await sys.retainedStatus('a3'))?.online === false, {
      timeoutMs: 30_000,
      message: 'a3 offline (last will)',
    });
    const stream = deployStream(sys, SITES, { everyMs: 300 });
    // Commands for a3 PUBACKed by the broker (attempts recorded), held in its session.
    await waitFor(() => sys.open().filter((c) => c.site === 'a3' && c.attempts > 0).length >= 2, {
      timeoutMs: 60_000,
      message: 'commands for a3 queued at the broker',
    });
    const queuedBefore = await sys.metric('outpost_broker_queued_messages', { client: 'a3' });
    expect(queuedBefore).toBeGreaterThan(0);
    await sys.killBroker('SIGKILL');
    await sleep(1_000);
    await sys.startBroker();
    // The queue survived kill -9 (I5: the broker PUBACKs only what it has committed).
    expect(await sys.metric('outpost_broker_queued_messages', { client: 'a3' })).toBeGreaterThanOrEqual(
      queuedBefore,
    );
    await sleep(2_000);
    offline.proxy.refuse(false);
    await sleep(2_000);
    await stream.stop();
    await sys.quiesce(90_000);
    expectCleanLedger(sys.ledger());
  }, 240_000);
});

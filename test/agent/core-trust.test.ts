/**
 * [TRUST-4]/[TRUST-5]: a trust.update is accepted only when it walks the version by one with the
 * current and the new root thresholds, and is persisted with its journal entry; afterwards the new
 * online keys are trusted and the removed ones are not.
 */
import { afterEach, beforeEach, expect, test } from 'vitest';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { COMMAND_TYPES, encodeTrustRoot, envelopeRef } from '../../protocol/src/index.js';
import { waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';
import { newSigner, trustDoc } from './helpers/pki.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-a');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
  running = await startAgent(site, { broker: broker.url });
  await waitFor(() => running?.agent.status().connected, { message: 'connected' });
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
});

test('v1 -> v2 accepted and persisted; v2 keys work, v1-only keys no longer; v3 needs v2 -> v3', async () => {
  const { pki } = site;
  const newRoots = [newSigner('root-3')];
  const online2 = newSigner('online-2');
  const v2 = trustDoc(2, newRoots, [{ signer: online2, types: COMMAND_TYPES }], { thr: 1, crit: 1 });

  // insufficient signatures: only the new roots, not the current ones
  await ctl.send('trust.update', { doc: encodeTrustRoot(v2, newRoots) });
  expect((await ctl.waitStatus(1, 'rejected')).rc).toBe('trust-threshold');
  // insufficient signatures: only the current roots, not the new ones
  await ctl.send('trust.update', { doc: encodeTrustRoot(v2, [pki.roots[0]!]) });
  expect((await ctl.waitStatus(2, 'rejected')).rc).toBe('trust-threshold');
  // skipping a version
  const v3 = trustDoc(3, newRoots, [{ signer: online2, types: COMMAND_TYPES }], { thr: 1 });
  await ctl.send('trust.update', { doc: encodeTrustRoot(v3, [pki.roots[0]!, newRoots[0]!]) });
  expect((await ctl.waitStatus(3, 'rejected')).rc).toBe('trust-version');
  expect(running!.agent.status().trustVersion).toBe(1);

  await ctl.send('trust.update', { doc: encodeTrustRoot(v2, [pki.roots[0]!, newRoots[0]!]) });
  await ctl.waitStatus(4, 'applied');
  expect(running!.agent.status().trustVersion).toBe(2);
  await waitFor(() => ctl.states.some((s) => s.trust === 2), { message: 'state reports trust 2' });

  // the old online key is gone (a rejection it cannot vouch for: ref only, [ACK-3])
  const old = await ctl.apply('hist', 1, undefined, { seq: 5, prev: 4 });
  const ref = Buffer.from(envelopeRef(old)).toString('hex');
  const rej = await ctl.waitAck((a) => a.ref !== undefined && Buffer.from(a.ref).toString('hex') === ref);
  expect(rej).toMatchObject({ st: 'rejected', rc: 'unknown-key' });
  // the new one signs
  await ctl.apply('hist', 1, undefined, { signer: online2, seq: 5, prev: 4 });
  await ctl.waitStatus(5, 'applied');

  // persisted: a restarted agent still has v2 (the provisioning file is v1)
  await running!.close();
  running = await startAgent(site, { broker: broker.url });
  expect(running.agent.status().trustVersion).toBe(2);
  // and v2 -> v3 now walks
  await waitFor(() => running?.agent.status().connected, { message: 'reconnected' });
  await ctl.send('trust.update', { doc: encodeTrustRoot(v3, [newRoots[0]!]) }, { signer: online2 });
  await ctl.waitStatus(6, 'applied');
  expect(running.agent.status().trustVersion).toBe(3);
});

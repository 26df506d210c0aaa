/**
 * MemoryRuntime passes the same StackRuntime conformance suite as DockerRuntime
 * (test/agent/runtime-conformance.ts), so the core's tests and the fleet simulator exercise the same
 * semantics; plus its reconciler (crash, drift) and the effect log that survives the agent process.
 */
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { MemoryRuntime, readEffectLog } from '../../agent/src/runtime/memory.js';
import type { DesiredStack } from '../../agent/src/runtime/types.js';
import type { Service } from '../../protocol/src/index.js';
import { tmpDir, waitFor } from '../helpers/index.js';
import { runtimeConformance, type ServiceKind } from './runtime-conformance.js';

const SERVICES: Record<ServiceKind, Service> = {
  v1: { img: 'memory/web', tag: '1' },
  v2: { img: 'memory/web', tag: '2' },
  broken: { img: 'memory/broken', tag: '1' },
  plain: { img: 'memory/busybox', tag: '1', cmd: ['sleep', 'forever'] },
  missing: { img: 'memory/absent', tag: '1' },
};

const image = (svc: Service) =>
  svc.img.endsWith('/broken') ? 'unhealthy' : svc.img.endsWith('/absent') ? 'missing' : 'ok';

runtimeConformance('MemoryRuntime', async ({ allowTags }) => {
  const runtime = new MemoryRuntime({ policy: { allowTags }, image });
  return {
    runtime,
    service: (k) => SERVICES[k],
    gate: { deadlineMs: 1000, runningForMs: 0 },
    failGate: { deadlineMs: 100, runningForMs: 0 },
    startedAt: async (stack, svc) => runtime.startedAt(stack, svc),
    units: async (stack) => runtime.units(stack),
    close: () => runtime.close(),
  };
});

const desired = (rev: number): DesiredStack => ({
  name: 'plant',
  rev,
  spec: { svc: { web: { ...SERVICES.v1, env: { REV: String(rev) } }, side: SERVICES.plain } },
  digest: `d${rev}`,
});

test('reconciler: restarts a crashed service and reverts drift, only for desired stacks (I7)', async () => {
  const rt = new MemoryRuntime({ policy: { allowTags: true }, reconcileIntervalMs: 20 });
  try {
    const d = desired(1);
    expect(await rt.apply(d, undefined, { deadlineMs: 1000, runningForMs: 0 })).toEqual({
      status: 'applied',
    });
    await rt.apply({ ...d, name: 'other' }, undefined, { deadlineMs: 1000, runningForMs: 0 });
    const changes: number[] = [];
    await rt.startReconciler(
      () => [d],
      (s) => changes.push(s.length),
    );
    rt.crash('plant', 'web');
    rt.drift('plant', 'side');
    rt.crash('other', 'web');
    await waitFor(async () => rt.inEffect(d), { message: 'converged' });
    const ops = rt.effects.filter((e) => e.stack === 'plant').map((e) => `${e.op}:${e.svc}`);
    expect(ops).toEqual(expect.arrayContaining(['start:web', 'remove:side', 'create:side']));
    expect(changes.length).toBeGreaterThan(0);
    // a stack outside desired() is left alone
    expect((await rt.snapshot()).find((s) => s.name === 'other')?.svc[0]?.st).toBe('exited');
  } finally {
    await rt.close();
  }
});

test('effect log: a new instance rebuilds the engine (running, or stopped after a reboot)', async () => {
  const log = join(tmpDir('fx'), 'effects.jsonl');
  const a = new MemoryRuntime({ policy: { allowTags: true }, effectLog: log });
  await a.apply(desired(1), undefined, { deadlineMs: 1000, runningForMs: 0 });
  await a.close();
  const running = new MemoryRuntime({ policy: { allowTags: true }, effectLog: log, restore: 'running' });
  expect(await running.inEffect(desired(1))).toBe(true);
  const rebooted = new MemoryRuntime({ policy: { allowTags: true }, effectLog: log, restore: 'stopped' });
  expect(await rebooted.inEffect(desired(1))).toBe(false);
  expect(rebooted.units('plant')).toBe(2);
  expect(readEffectLog(log).filter((e) => e.op === 'create')).toHaveLength(2);
});

/**
 * Regression test for a bug the soak found (docs/RELIABILITY.md, "Findings"): MemoryRuntime's
 * reconciler reads `desired()` once per pass and then converges each stack after awaiting that
 * stack's lock. An apply that holds the lock meanwhile (the executor running a newer revision — at
 * agent start, the sequencer resumes a journalled command while the reconciler's first pass runs) is
 * reverted to the stale revision as soon as it returns: the new revision's containers are removed
 * and the old ones created again (I2: an effect twice; I3: an older revision after a newer one), and
 * the stack stays on the old revision until the next pass.
 *
 * DockerRuntime does not have this: its pass takes the stack's mutex first and only then computes the
 * target (`targetFor`, with "the last apply's outcome wins until desired() agrees"), as the
 * StackRuntime contract in agent/src/runtime/types.ts describes. Found with
 *   scripts/soak.sh 90s --sites 5 --seed 777   (soak4/cfg rev 24 created twice, after rev 26)
 * The fault harness runs agents on harness/ledger-runtime.ts (DockerRuntime's reconciler semantics
 * over MemoryRuntime) so that the soak judges the core, not this test double.
 */
import { afterEach, expect, test } from 'vitest';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import type { DesiredStack } from '../../agent/src/runtime/types.js';

const target = (name: string, rev: number): DesiredStack => ({
  name,
  rev,
  spec: {
    svc: { web: { img: 'registry.local/x/web', dig: new Uint8Array(32).fill(rev), env: { REV: `${rev}` } } },
  },
  digest: `digest-${name}-${rev}`,
});
const gate = { deadlineMs: 1_000, runningForMs: 0 };
let rt: MemoryRuntime | undefined;

afterEach(async () => {
  await rt?.close();
});

test('MemoryRuntime reconciler does not revert an apply that ran during its pass to the stale desired revision (I2, I3)', async () => {
  rt = new MemoryRuntime({ applyDelayMs: 50, reconcileIntervalMs: 60_000 });
  await rt.apply(target('a', 1), undefined, gate);
  await rt.apply(target('b', 1), undefined, gate);
  // The core's desired view when the reconciler starts: a@1, b@1.
  let desired: DesiredStack[] = [target('a', 1), target('b', 1)];
  const reconciling = rt.startReconciler(
    () => desired,
    () => undefined,
  );
  // The executor applies b@2 meanwhile (b is busy, so the core leaves it out of desired()).
  const applying = rt.apply(target('b', 2), target('b', 1), gate);
  desired = [target('a', 1)];
  expect((await applying).status).toBe('applied');
  desired = [target('a', 1), target('b', 2)];
  await reconciling;
  await new Promise((r) => setTimeout(r, 100));

  const creates = rt.effects.filter((e) => e.op === 'create' && e.stack === 'b').map((e) => e.rev);
  expect(creates, 'b created at rev 1, then rev 2, and never rev 1 again').toEqual([1, 2]);
  expect((await rt.snapshot()).find((s) => s.name === 'b')?.rev).toBe(2);
});

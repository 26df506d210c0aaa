/**
 * The StackRuntime conformance suite (STYLE: "every pluggable interface gets a conformance suite",
 * after aedes-persistence's abstract.js). Every runtime runs it: DockerRuntime against the private
 * engine (runtime-docker.test.ts) and the in-memory runtime.
 *
 *   runtimeConformance('MemoryRuntime', async ({ allowTags }) => ({ runtime, service, gate, ... }));
 *
 * The harness supplies the services (so each runtime decides what "healthy", "broken" and "missing"
 * mean for it) and two probes the interface does not expose: when a service last started, and how
 * many units (containers) a stack has. Stack names are unique per test, so runtimes may share state.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredStack, HealthGate, StackRuntime } from '../../agent/src/runtime/types.js';
import type { Service, StackSpec } from '../../protocol/src/index.js';

export type ServiceKind =
  /** Becomes healthy (has a healthcheck). */
  | 'v1'
  /** Becomes healthy, and differs from v1 (another image): an update. */
  | 'v2'
  /** Keeps running but never becomes healthy. */
  | 'broken'
  /** No healthcheck; keeps running (healthy after gate.runningForMs). */
  | 'plain'
  /** Its image cannot be obtained (absent and not pullable). */
  | 'missing';

export interface ConformanceHarness {
  readonly runtime: StackRuntime;
  service(kind: ServiceKind): Service;
  /** A gate the healthy services pass comfortably. */
  readonly gate: HealthGate;
  /** A short gate for rollback tests. */
  readonly failGate: HealthGate;
  /** When the service's unit last started (ms since the epoch); undefined when it has none. */
  startedAt(stack: string, service: string): Promise<number | undefined>;
  /** Number of units (containers) the stack has, running or not. */
  units(stack: string): Promise<number>;
  close(): Promise<void>;
}

export type MakeRuntime = (opts: { allowTags: boolean }) => Promise<ConformanceHarness>;

const SLOW = 90_000;

export function runtimeConformance(name: string, makeRuntime: MakeRuntime): void {
  describe(`StackRuntime conformance: ${name}`, () => {
    let h: ConformanceHarness;
    const tag = randomBytes(3).toString('hex');
    let n = 0;
    const stackName = () => `cf${tag}-${++n}`;
    const target = (
      name: string,
      rev: number,
      svc: Record<string, Service>,
      extra: Partial<DesiredStack> = {},
    ) => {
      const spec: StackSpec = { svc };
      return { name, rev, spec, digest: `${name}-${rev}`, ...extra } satisfies DesiredStack;
    };
    const stateOf = async (stack: string) => (await h.runtime.snapshot()).find((s) => s.name === stack);

    beforeAll(async () => {
      h = await makeRuntime({ allowTags: true });
    });
    afterAll(async () => {
      await h?.close();
    });

    it('apply deploys a stack: applied, in effect, in the snapshot, one unit per service', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const t = target(s, 1, { web: h.service('v1'), side: h.service('plain') });
      expect(await h.runtime.inEffect(t)).toBe(false);
      expect(await h.runtime.apply(t, undefined, h.gate)).toEqual({ status: 'applied' });
      expect(await h.runtime.inEffect(t)).toBe(true);
      expect(await h.units(s)).toBe(2);
      const st = await stateOf(s);
      expect(st).toMatchObject({ name: s, rev: 1, h: 'healthy' });
      expect(st?.svc.map((x) => x.n).sort()).toEqual(['side', 'web']);
      expect(st?.svc.every((x) => x.h === 'healthy')).toBe(true);
    });

    it('re-applying the same target is idempotent: nothing restarts (I2)', { timeout: SLOW }, async () => {
      const s = stackName();
      const t = target(s, 1, { web: h.service('v1') });
      expect(await h.runtime.apply(t, undefined, h.gate)).toEqual({ status: 'applied' });
      const started = await h.startedAt(s, 'web');
      expect(await h.runtime.apply(t, undefined, h.gate)).toEqual({ status: 'applied' });
      expect(await h.startedAt(s, 'web')).toBe(started);
      expect(await h.units(s)).toBe(1);
    });

    it('concurrent applies of one stack are serialised and end with one unit per service', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const t = target(s, 1, { web: h.service('v1'), side: h.service('plain') });
      const [a, b] = await Promise.all([
        h.runtime.apply(t, undefined, h.gate),
        h.runtime.apply(t, undefined, h.gate),
      ]);
      expect(a).toEqual({ status: 'applied' });
      expect(b).toEqual({ status: 'applied' });
      expect(await h.units(s)).toBe(2);
    });

    it('updates rev1 → rev2; a revision that leaves a service unchanged does not restart it', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const r1 = target(s, 1, { web: h.service('v1'), side: h.service('plain') });
      const r2 = target(s, 2, { web: h.service('v2'), side: h.service('plain') });
      expect(await h.runtime.apply(r1, undefined, h.gate)).toEqual({ status: 'applied' });
      const side = await h.startedAt(s, 'side');
      expect(await h.runtime.apply(r2, r1, h.gate)).toEqual({ status: 'applied' });
      expect(await h.runtime.inEffect(r2)).toBe(true);
      expect(await h.runtime.inEffect(r1)).toBe(false);
      expect(await h.startedAt(s, 'side')).toBe(side);
      expect(await stateOf(s)).toMatchObject({ rev: 2 });
      const r3 = { ...r2, rev: 3, digest: `${s}-3` };
      expect(await h.runtime.apply(r3, r2, h.gate)).toEqual({ status: 'applied' });
      expect(await h.startedAt(s, 'side')).toBe(side);
      expect(await stateOf(s)).toMatchObject({ rev: 3 });
      expect(await h.units(s)).toBe(2);
    });

    it('an update that never becomes healthy rolls back to the previous revision (I7)', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const r1 = target(s, 1, { web: h.service('v1') });
      const r2 = target(s, 2, { web: h.service('broken') });
      expect(await h.runtime.apply(r1, undefined, h.gate)).toEqual({ status: 'applied' });
      const out = await h.runtime.apply(r2, r1, h.failGate);
      expect(out).toMatchObject({ status: 'rolled-back', reason: 'health-timeout', restoredRev: 1 });
      expect(await h.runtime.inEffect(r1)).toBe(true);
      expect(await h.runtime.inEffect(r2)).toBe(false);
      expect(await h.units(s)).toBe(1);
      expect(await stateOf(s)).toMatchObject({ rev: 1 });
    });

    it('a first deployment that never becomes healthy is removed (restoredRev 0)', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const out = await h.runtime.apply(target(s, 1, { web: h.service('broken') }), undefined, h.failGate);
      expect(out).toMatchObject({ status: 'rolled-back', reason: 'health-timeout', restoredRev: 0 });
      expect(await h.units(s)).toBe(0);
      const st = await stateOf(s);
      expect(st === undefined || st.rev === 0).toBe(true);
    });

    it('policy refusals and malformed targets fail typed and touch nothing (DESIGN §5, I9)', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const r1 = target(s, 1, { web: h.service('v1') });
      expect(await h.runtime.apply(r1, undefined, h.gate)).toEqual({ status: 'applied' });
      const started = await h.startedAt(s, 'web');
      const priv = target(s, 2, { web: { ...h.service('v2'), priv: true } });
      expect(await h.runtime.apply(priv, r1, h.gate)).toMatchObject({ status: 'failed', reason: 'policy' });
      const hostNet = target(s, 2, { web: { ...h.service('v2'), net: 'host' } });
      expect(await h.runtime.apply(hostNet, r1, h.gate)).toMatchObject({
        status: 'failed',
        reason: 'policy',
      });
      const mount = target(s, 2, { web: { ...h.service('v2'), vols: ['/etc:/x:ro'] } });
      expect(await h.runtime.apply(mount, r1, h.gate)).toMatchObject({ status: 'failed', reason: 'policy' });
      const bad = { ...r1, rev: 2, spec: { svc: { web: { img: '' } } } } as unknown as DesiredStack;
      expect(await h.runtime.apply(bad, r1, h.gate)).toMatchObject({ status: 'failed', reason: 'malformed' });
      expect(await h.startedAt(s, 'web')).toBe(started);
      expect(await h.runtime.inEffect(r1)).toBe(true);

      const strict = await makeRuntime({ allowTags: false });
      try {
        const tagged = target(stackName(), 1, { web: h.service('v1') });
        expect(await strict.runtime.apply(tagged, undefined, h.gate)).toMatchObject({
          status: 'failed',
          reason: 'policy',
        });
        expect(await strict.units(tagged.name)).toBe(0);
      } finally {
        await strict.close();
      }
    });

    it('an image that cannot be obtained fails with image-unavailable, previous untouched', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const r1 = target(s, 1, { web: h.service('v1') });
      expect(await h.runtime.apply(r1, undefined, h.gate)).toEqual({ status: 'applied' });
      const started = await h.startedAt(s, 'web');
      const r2 = target(s, 2, { web: h.service('missing') });
      expect(await h.runtime.apply(r2, r1, h.gate)).toMatchObject({
        status: 'failed',
        reason: 'image-unavailable',
      });
      expect(await h.startedAt(s, 'web')).toBe(started);
      expect(await h.runtime.inEffect(r1)).toBe(true);
    });

    it('remove is idempotent and leaves nothing', { timeout: SLOW }, async () => {
      const s = stackName();
      const t = target(s, 1, { web: h.service('v1'), side: h.service('plain') });
      expect(await h.runtime.apply(t, undefined, h.gate)).toEqual({ status: 'applied' });
      await h.runtime.remove(s, { volumes: false });
      expect(await h.units(s)).toBe(0);
      expect(await h.runtime.inEffect(t)).toBe(false);
      const st = await stateOf(s);
      expect(st === undefined || st.rev === 0).toBe(true);
      await h.runtime.remove(s, { volumes: true });
      await h.runtime.remove(stackName(), { volumes: false });
    });

    it('restart skips services started at or after notBeforeMs: exactly once after a crash (I2)', {
      timeout: SLOW,
    }, async () => {
      const s = stackName();
      const before = Date.now() - 1;
      const t = target(s, 1, { web: h.service('v1'), side: h.service('plain') });
      expect(await h.runtime.apply(t, undefined, h.gate)).toEqual({ status: 'applied' });
      const web0 = (await h.startedAt(s, 'web')) as number;
      const side0 = (await h.startedAt(s, 'side')) as number;
      await h.runtime.restart(s, [], before);
      expect(await h.startedAt(s, 'web')).toBe(web0);

      await new Promise((r) => setTimeout(r, 20));
      const notBefore = Date.now();
      await h.runtime.restart(s, ['web'], notBefore);
      const web1 = (await h.startedAt(s, 'web')) as number;
      expect(web1).toBeGreaterThanOrEqual(notBefore);
      expect(await h.startedAt(s, 'side')).toBe(side0);
      // Resumed after a crash with the same notBefore: nothing restarts twice.
      await h.runtime.restart(s, ['web'], notBefore);
      expect(await h.startedAt(s, 'web')).toBe(web1);
      await h.runtime.restart(s, [], notBefore);
      expect(await h.startedAt(s, 'web')).toBe(web1);
      expect((await h.startedAt(s, 'side')) as number).toBeGreaterThanOrEqual(notBefore);
      expect(await h.units(s)).toBe(2);

      await expect(h.runtime.restart(stackName(), [], Date.now())).rejects.toMatchObject({
        code: 'unknown-stack',
      });
    });
  });
}

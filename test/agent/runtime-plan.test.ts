/**
 * The planner over plain objects (no Docker): examples and fast-check properties against a model of
 * the engine. STYLE "Plan, then execute"; I2 (one container per service after any resume), I7.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { altContainerName, containerName, serviceHash } from '../../agent/src/runtime/hash.js';
import {
  type ContainerState,
  isDisruptive,
  type ObservedContainer,
  type ObservedStack,
  plan,
  type Step,
} from '../../agent/src/runtime/plan.js';
import { stackVolumes } from '../../agent/src/runtime/policy.js';
import type { DesiredStack } from '../../agent/src/runtime/types.js';
import { imageRef, type Service, type StackSpec } from '../../protocol/src/index.js';

const STACK = 'plant';

function desired(svc: Record<string, Service>, rev = 1, vol?: string[]): DesiredStack {
  const spec: StackSpec = vol ? { svc, vol } : { svc };
  return { name: STACK, rev, spec, digest: `d${rev}` };
}

const imgId = (ref: string) => `sha256:${createHash('sha256').update(ref).digest('hex')}`;

/** A model of the engine holding one stack; steps mutate it the way the executors do. */
interface Model {
  containers: ObservedContainer[];
  volumes: Set<string>;
  images: Record<string, string>;
  takenNames: string[];
  seq: number;
}

function observed(m: Model): ObservedStack {
  return {
    name: STACK,
    containers: m.containers.map((c) => ({ ...c })),
    volumes: [...m.volumes],
    images: { ...m.images },
    takenNames: [...m.takenNames],
  };
}

function find(m: Model, idOrName: string): ObservedContainer {
  const c = m.containers.find((x) => x.id === idOrName || x.name === idOrName);
  if (!c) throw new Error(`no container ${idOrName}`);
  return c;
}

function set(m: Model, c: ObservedContainer, patch: Partial<ObservedContainer>): void {
  m.containers = m.containers.map((x) => (x === c ? { ...x, ...patch } : x));
}

function exec(m: Model, s: Step): void {
  switch (s.kind) {
    case 'ensureImage':
      m.images[s.ref] ??= imgId(s.ref);
      return;
    case 'ensureVolume':
      m.volumes.add(s.volume);
      return;
    case 'removeVolume':
      m.volumes.delete(s.volume);
      return;
    case 'stopContainer':
      set(m, find(m, s.id), { state: 'exited', exitCode: 0 });
      return;
    case 'removeContainer':
      find(m, s.id);
      m.containers = m.containers.filter((c) => c.id !== s.id);
      return;
    case 'createContainer': {
      if (m.containers.some((c) => c.name === s.name) || m.takenNames.includes(s.name)) {
        throw new Error(`name conflict ${s.name}`);
      }
      const imageId = m.images[s.ref];
      if (!imageId) throw new Error(`image ${s.ref} missing at create`);
      m.seq += 1;
      m.containers.push({
        id: `new${m.seq}`,
        name: s.name,
        stack: s.stack,
        service: s.service,
        rev: s.rev,
        hash: s.hash,
        imageId,
        state: 'created',
        exitCode: 0,
      });
      return;
    }
    case 'startContainer':
    case 'unpauseContainer':
      set(m, find(m, s.container), { state: 'running' });
      return;
  }
}

function converged(m: Model, t: DesiredStack): void {
  const services = Object.keys(t.spec.svc);
  for (const c of m.containers) expect(services).toContain(c.service);
  for (const [n, s] of Object.entries(t.spec.svc)) {
    const mine = m.containers.filter((c) => c.service === n);
    expect(mine, `one container for ${n}`).toHaveLength(1);
    const c = mine[0] as ObservedContainer;
    expect(c.hash).toBe(serviceHash(STACK, n, s));
    expect(c.imageId).toBe(m.images[imageRef(s)]);
    const finishedJob =
      c.state === 'exited' && (s.rst === 'no' || (s.rst === 'on-failure' && c.exitCode === 0));
    if (!finishedJob) expect(['running', 'restarting']).toContain(c.state);
  }
  for (const v of stackVolumes(t)) expect(m.volumes.has(v)).toBe(true);
}

const web1: Service = { img: 'reg.local/acme/web', tag: '1', env: { MODE: 'a' } };
const web2: Service = { img: 'reg.local/acme/web', tag: '2', env: { MODE: 'a' } };
const db: Service = { img: 'reg.local/acme/db', tag: '1', vols: ['data:/var/lib/db'] };

function mk(svc: string, s: Service, patch: Partial<ObservedContainer> = {}): ObservedContainer {
  return {
    id: `id-${svc}-${patch.name ?? ''}`,
    name: containerName(STACK, svc),
    stack: STACK,
    service: svc,
    rev: 1,
    hash: serviceHash(STACK, svc, s),
    imageId: imgId(imageRef(s)),
    state: 'running',
    exitCode: 0,
    ...patch,
  };
}

function model(
  containers: ObservedContainer[],
  refs: string[],
  vols: string[] = [],
  taken: string[] = [],
): Model {
  return {
    containers,
    volumes: new Set(vols),
    images: Object.fromEntries(refs.map((r) => [r, imgId(r)])),
    takenNames: taken,
    seq: 0,
  };
}

const kinds = (steps: Step[]) => steps.map((s) => s.kind);

describe('plan (examples)', () => {
  it('deploys a new stack: images, volumes, then create+start per service', () => {
    const t = desired({ web: web1, db }, 1, ['data']);
    const steps = plan(observed(model([], [])), t);
    expect(kinds(steps)).toEqual([
      'ensureImage',
      'ensureImage',
      'ensureVolume',
      'createContainer',
      'startContainer',
      'createContainer',
      'startContainer',
    ]);
    const create = steps.find((s) => s.kind === 'createContainer');
    expect(create).toMatchObject({ name: 'outpost_plant_db', rev: 1, service: 'db' });
  });

  it('keeps a service whose hash matches on a revision bump (no restart), replaces a changed one', () => {
    const m = model([mk('web', web1), mk('db', db)], [imageRef(web1), imageRef(db)], ['data']);
    expect(plan(observed(m), desired({ web: web1, db }, 2))).toEqual([]);
    const steps = plan(observed(m), desired({ web: web2, db }, 3));
    expect(kinds(steps)).toEqual([
      'ensureImage',
      'stopContainer',
      'removeContainer',
      'createContainer',
      'startContainer',
    ]);
    expect(steps.every((s) => !('service' in s) || s.service === 'web')).toBe(true);
  });

  it('the hash ignores key order and binds stack and service names', () => {
    const a: Service = { img: 'x', tag: '1', env: { A: '1', B: '2' } };
    const b: Service = { env: { B: '2', A: '1' }, tag: '1', img: 'x' };
    expect(serviceHash('s', 'web', a)).toBe(serviceHash('s', 'web', b));
    expect(serviceHash('s', 'web', a)).not.toBe(serviceHash('s', 'api', a));
    expect(serviceHash('s', 'web', a)).not.toBe(serviceHash('t', 'web', a));
    expect(serviceHash('s', 'web', a)).not.toBe(serviceHash('s', 'web', { ...a, env: { A: '1' } }));
  });

  it('replaces a container whose image differs although its hash label matches (drift by hand)', () => {
    const m = model([mk('web', web1, { imageId: 'sha256:other' })], [imageRef(web1)]);
    expect(kinds(plan(observed(m), desired({ web: web1 })))).toEqual([
      'stopContainer',
      'removeContainer',
      'createContainer',
      'startContainer',
    ]);
  });

  it('starts stopped containers per restart policy, unpauses paused ones, replaces dead ones', () => {
    const job: Service = { ...web1, rst: 'no' };
    const onf: Service = { ...web1, rst: 'on-failure' };
    const t = desired({ a: web1, b: job, c: onf, d: onf, e: web1, f: web1 });
    const m = model(
      [
        mk('a', web1, { state: 'exited', exitCode: 137 }),
        mk('b', job, { state: 'exited', exitCode: 0 }),
        mk('c', onf, { state: 'exited', exitCode: 0 }),
        mk('d', onf, { state: 'exited', exitCode: 2 }),
        mk('e', web1, { state: 'paused' }),
        mk('f', web1, { state: 'dead' }),
      ].map((c) => ({ ...c, name: containerName(STACK, c.service), id: c.service })),
      [imageRef(web1)],
    );
    const steps = plan(observed(m), t);
    expect(steps).toEqual([
      { kind: 'startContainer', container: 'a', service: 'a' },
      { kind: 'startContainer', container: 'd', service: 'd' },
      { kind: 'unpauseContainer', container: 'e', service: 'e' },
      { kind: 'removeContainer', id: 'f', name: 'outpost_plant_f', service: 'f' },
      expect.objectContaining({ kind: 'createContainer', name: 'outpost_plant_f' }),
      { kind: 'startContainer', container: 'outpost_plant_f', service: 'f' },
    ]);
  });

  it('never reuses a name held by a container that is not ours: falls back to a hash suffix', () => {
    const t = desired({ web: web1 });
    const steps = plan(observed(model([], [imageRef(web1)], [], ['outpost_plant_web'])), t);
    const hash = serviceHash(STACK, 'web', web1);
    expect(steps).toContainEqual(
      expect.objectContaining({ kind: 'createContainer', name: altContainerName(STACK, 'web', hash) }),
    );
  });

  it('removes containers of services the target dropped, first; keeps exactly one per service (I2)', () => {
    const dup = mk('web', web1, { id: 'dup', name: 'outpost_plant_web_dup', state: 'created' });
    const m = model(
      [mk('web', web1), dup, mk('old', web1, { id: 'old', name: 'outpost_plant_old' })],
      [imageRef(web1)],
    );
    const steps = plan(observed(m), desired({ web: web1 }));
    expect(steps).toEqual([
      { kind: 'stopContainer', id: 'old', name: 'outpost_plant_old', service: 'old' },
      { kind: 'removeContainer', id: 'old', name: 'outpost_plant_old', service: 'old' },
      { kind: 'removeContainer', id: 'dup', name: 'outpost_plant_web_dup', service: 'web' },
    ]);
  });

  it('removal: all containers, volumes only when asked', () => {
    const m = model([mk('web', web1, { state: 'exited' }), mk('db', db)], [], ['data']);
    expect(kinds(plan(observed(m), undefined))).toEqual([
      'stopContainer',
      'removeContainer',
      'removeContainer',
    ]);
    expect(kinds(plan(observed(m), undefined, { removeVolumes: true }))).toContain('removeVolume');
  });
});

// ---- properties ------------------------------------------------------------------------------

const SERVICES = ['a', 'b', 'c', 'd'] as const;
const arbService: fc.Arbitrary<Service> = fc.record(
  {
    img: fc.constantFrom('reg.local/x/web', 'reg.local/x/db'),
    tag: fc.constantFrom('1', '2'),
    env: fc.dictionary(fc.constantFrom('A', 'B'), fc.constantFrom('0', '1')),
    rst: fc.constantFrom('no' as const, 'always' as const, 'unless-stopped' as const, 'on-failure' as const),
    vols: fc.constantFrom(['data:/data'], ['logs:/logs:ro'], []),
  },
  { requiredKeys: ['img', 'tag'] },
);
const arbTarget: fc.Arbitrary<DesiredStack> = fc
  .record({
    svc: fc.dictionary(fc.constantFrom(...SERVICES), arbService, { minKeys: 1, maxKeys: 4 }),
    rev: fc.integer({ min: 1, max: 9 }),
    vol: fc.option(fc.constant<string[]>(['data']), { nil: undefined }),
  })
  .map(({ svc, rev, vol }) => desired(svc, rev, vol));

const STATES: ContainerState[] = ['created', 'running', 'paused', 'restarting', 'exited', 'dead'];

/** Current state: containers made from the target's services (matching or not) and from others. */
function arbCurrent(t: DesiredStack): fc.Arbitrary<Model> {
  const arbC = fc.record({
    service: fc.constantFrom(...SERVICES, 'zz'),
    matching: fc.boolean(),
    otherImage: fc.boolean(),
    state: fc.constantFrom(...STATES),
    exitCode: fc.constantFrom(0, 1, 137),
    canonical: fc.boolean(),
    rev: fc.integer({ min: 1, max: 9 }),
  });
  return fc
    .record({
      cs: fc.array(arbC, { maxLength: 6 }),
      refs: fc.subarray(['reg.local/x/web:1', 'reg.local/x/web:2', 'reg.local/x/db:1', 'reg.local/x/db:2']),
      vols: fc.subarray(['data', 'logs']),
      taken: fc.subarray(SERVICES.map((s) => containerName(STACK, s))),
    })
    .map(({ cs, refs, vols, taken }) => {
      const m = model([], refs, vols, taken);
      cs.forEach((c, i) => {
        const s = t.spec.svc[c.service];
        const name = c.canonical ? containerName(STACK, c.service) : `outpost_plant_${c.service}_${i}`;
        if (m.takenNames.includes(name) || m.containers.some((x) => x.name === name)) return;
        const ref = s ? imageRef(s) : 'reg.local/x/web:1';
        m.containers.push({
          id: `c${i}`,
          name,
          stack: STACK,
          service: c.service,
          rev: c.rev,
          hash: s && c.matching ? serviceHash(STACK, c.service, s) : `h${i}`,
          imageId: c.otherImage ? 'sha256:other' : (m.images[ref] ?? imgId(ref)),
          state: c.state,
          exitCode: c.exitCode,
        });
      });
      return m;
    });
}

const scenario = arbTarget.chain((t) => arbCurrent(t).map((m) => ({ t, m })));

describe('plan (properties)', () => {
  it('executing plan(current, target) on the model reaches target; then plan is empty', () => {
    fc.assert(
      fc.property(scenario, ({ t, m }) => {
        const taken = [...m.takenNames];
        for (const s of plan(observed(m), t)) exec(m, s);
        converged(m, t);
        expect(m.takenNames).toEqual(taken);
        expect(plan(observed(m), t)).toEqual([]);
      }),
      { numRuns: 400 },
    );
  });

  it('resuming after a crash at any step converges to exactly one container per service (I2)', () => {
    fc.assert(
      fc.property(scenario, fc.nat(), ({ t, m }, cut) => {
        const steps = plan(observed(m), t);
        for (const s of steps.slice(0, steps.length === 0 ? 0 : cut % steps.length)) exec(m, s);
        for (const s of plan(observed(m), t)) exec(m, s);
        converged(m, t);
      }),
      { numRuns: 400 },
    );
  });

  it('images are ensured before anything disruptive; only current containers are stopped or removed', () => {
    fc.assert(
      fc.property(scenario, ({ t, m }) => {
        const steps = plan(observed(m), t);
        const firstDisruptive = steps.findIndex(isDisruptive);
        const lastImage = steps.map((s) => s.kind).lastIndexOf('ensureImage');
        if (firstDisruptive >= 0) expect(lastImage).toBeLessThan(firstDisruptive);
        const ids = new Set(m.containers.map((c) => c.id));
        for (const s of steps) {
          if (s.kind === 'stopContainer' || s.kind === 'removeContainer') expect(ids.has(s.id)).toBe(true);
          if (s.kind === 'createContainer') expect(m.takenNames).not.toContain(s.name);
          expect(s.kind).not.toBe('removeVolume');
        }
      }),
      { numRuns: 300 },
    );
  });

  it('plan(target, target) = [] and a running matching container is never touched', () => {
    fc.assert(
      fc.property(scenario, ({ t, m }) => {
        for (const s of plan(observed(m), t)) exec(m, s);
        const before = m.containers.map((c) => ({ ...c }));
        const bumped = { ...t, rev: t.rev + 1 };
        expect(plan(observed(m), bumped)).toEqual([]);
        expect(m.containers).toEqual(before);
      }),
      { numRuns: 200 },
    );
  });

  it('removal empties the stack and keeps volumes unless asked', () => {
    fc.assert(
      fc.property(scenario, fc.boolean(), ({ t, m }, vols) => {
        const before = new Set(m.volumes);
        for (const s of plan(observed(m), undefined, { removeVolumes: vols })) exec(m, s);
        expect(m.containers).toEqual([]);
        expect(m.volumes.size).toBe(vols ? 0 : before.size);
        void t;
      }),
      { numRuns: 200 },
    );
  });
});

/**
 * The planner: `plan(current, target) → Step[]` over plain data ("plan, then execute", after
 * balena-supervisor's composition steps). No I/O; the executors (executors.ts) are the only code
 * that talks to the engine. Unit- and property-tested with plain objects (test/agent/runtime-plan.test.ts).
 *
 * Rules:
 * - Only this stack's managed containers are ever stopped or removed (`current.containers` holds
 *   nothing else); containers that are not ours only reserve names (`takenNames`).
 * - A service keeps a container whose hash label equals the target's service hash and whose image is
 *   the image the target's reference resolves to locally (when the reference is not present locally,
 *   nothing proves the container runs it: the image is ensured and the container replaced, so one
 *   plan always converges); every other container of the service is
 *   stopped and removed, so exactly one container per service remains (I2: resuming an interrupted
 *   apply completes it rather than duplicating it).
 * - Images are ensured first, before anything is stopped: a missing image fails the apply while the
 *   old revision is still running. Volumes are never removed except by `remove(..., volumes)`.
 * - Replacement is stop → remove → create → start, per service in name order: the old container
 *   frees its name (and its published ports) before the new one is created.
 */
import type { Service } from '../../../protocol/src/index.js';
import { imageRef } from '../../../protocol/src/index.js';
import { altContainerName, containerName, serviceHash } from './hash.js';
import { stackVolumes } from './policy.js';
import type { DesiredStack } from './types.js';

/** Docker container states (`State.Status`). */
export type ContainerState = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';

/** One managed container of the stack, as observed. */
export interface ObservedContainer {
  readonly id: string;
  /** Without Docker's leading slash. */
  readonly name: string;
  readonly stack: string;
  readonly service: string;
  /** Revision label (0 when unreadable). */
  readonly rev: number;
  readonly hash: string;
  /** Image id (`sha256:...`) the container was created from. */
  readonly imageId: string;
  readonly state: ContainerState;
  /** Exit code of the last run (meaningful when `exited`). */
  readonly exitCode: number;
}

/** What the engine holds for one stack, reduced to what planning needs. */
export interface ObservedStack {
  readonly name: string;
  /** This stack's managed containers only (LABELS.managed, this site, this stack). */
  readonly containers: readonly ObservedContainer[];
  /** Short names of this stack's named volumes that exist. */
  readonly volumes: readonly string[];
  /** Image reference → local image id, for the target's references that are present locally. */
  readonly images: Readonly<Record<string, string>>;
  /** Container names held by containers that are not this stack's (never touched, never reused). */
  readonly takenNames: readonly string[];
}

export type Step =
  | { readonly kind: 'ensureImage'; readonly ref: string }
  | { readonly kind: 'ensureVolume'; readonly stack: string; readonly volume: string }
  | { readonly kind: 'stopContainer'; readonly id: string; readonly name: string; readonly service: string }
  | {
      readonly kind: 'removeContainer';
      readonly id: string;
      readonly name: string;
      readonly service: string;
    }
  | {
      readonly kind: 'createContainer';
      readonly stack: string;
      readonly service: string;
      readonly name: string;
      readonly rev: number;
      readonly hash: string;
      readonly ref: string;
      readonly spec: Service;
    }
  /** `container`: id or name. */
  | { readonly kind: 'startContainer'; readonly container: string; readonly service: string }
  | { readonly kind: 'unpauseContainer'; readonly container: string; readonly service: string }
  | { readonly kind: 'removeVolume'; readonly stack: string; readonly volume: string };

export type StepKind = Step['kind'];

export interface PlanOptions {
  /** With `target` undefined: also remove the stack's named volumes (critical, DESIGN §5). */
  readonly removeVolumes?: boolean;
}

const STATE_RANK: Record<ContainerState, number> = {
  running: 0,
  restarting: 1,
  paused: 2,
  created: 3,
  exited: 4,
  dead: 9,
  removing: 9,
};

/**
 * Whether an exited container should be started again, honouring the service's restart policy: a
 * `no` service that ran and exited stays exited (a finished job); `on-failure` restarts after a
 * non-zero exit; everything else (default `unless-stopped`, `always`) is started.
 */
export function wantsStart(c: Pick<ObservedContainer, 'state' | 'exitCode'>, s: Service): boolean {
  if (c.state === 'created') return true;
  if (c.state !== 'exited') return false;
  if (s.rst === 'no') return false;
  if (s.rst === 'on-failure') return c.exitCode !== 0;
  return true;
}

function needsStop(c: ObservedContainer): boolean {
  return c.state === 'running' || c.state === 'restarting' || c.state === 'paused';
}

function retire(c: ObservedContainer, out: Step[]): void {
  if (needsStop(c)) out.push({ kind: 'stopContainer', id: c.id, name: c.name, service: c.service });
  out.push({ kind: 'removeContainer', id: c.id, name: c.name, service: c.service });
}

const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** The container to keep for a service, if any (deterministic). */
function keeper(
  candidates: readonly ObservedContainer[],
  hash: string,
  imageId: string | undefined,
  canonical: string,
): ObservedContainer | undefined {
  const ok = candidates.filter(
    (c) =>
      c.hash === hash &&
      c.state !== 'dead' &&
      c.state !== 'removing' &&
      imageId !== undefined &&
      c.imageId === imageId,
  );
  ok.sort(
    (a, b) =>
      STATE_RANK[a.state] - STATE_RANK[b.state] ||
      Number(b.name === canonical) - Number(a.name === canonical) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  return ok[0];
}

/** Plans the steps that turn `current` into `target` (or remove the stack when `target` is undefined). */
export function plan(
  current: ObservedStack,
  target: DesiredStack | undefined,
  opts: PlanOptions = {},
): Step[] {
  const live = current.containers.filter((c) => c.state !== 'removing');
  const steps: Step[] = [];
  if (!target) {
    for (const c of [...live].sort(byName)) retire(c, steps);
    if (opts.removeVolumes) {
      for (const v of [...current.volumes].sort()) {
        steps.push({ kind: 'removeVolume', stack: current.name, volume: v });
      }
    }
    return steps;
  }

  const services = Object.keys(target.spec.svc).sort();
  const wanted = new Set(services);
  const head: Step[] = [];
  const tail: Step[] = [];
  const refs = new Set<string>();

  // Containers of services the target no longer has go first (they may hold ports or names).
  for (const c of [...live].sort(byName)) if (!wanted.has(c.service)) retire(c, tail);

  const remaining = new Set(live.map((c) => c.name));
  const reserved = new Set(current.takenNames);
  for (const name of services) {
    const s = target.spec.svc[name] as Service;
    const hash = serviceHash(target.name, name, s);
    const ref = imageRef(s);
    const canonical = containerName(target.name, name);
    const mine = live.filter((c) => c.service === name);
    const keep = keeper(mine, hash, current.images[ref], canonical);
    for (const c of mine) {
      if (c === keep) continue;
      retire(c, tail);
      remaining.delete(c.name);
    }
    if (keep) {
      if (keep.state === 'paused') tail.push({ kind: 'unpauseContainer', container: keep.id, service: name });
      else if (wantsStart(keep, s)) tail.push({ kind: 'startContainer', container: keep.id, service: name });
      continue;
    }
    if (current.images[ref] === undefined && !refs.has(ref)) {
      refs.add(ref);
      head.push({ kind: 'ensureImage', ref });
    }
    const free = (n: string) => !reserved.has(n) && !remaining.has(n);
    const cname = free(canonical) ? canonical : altContainerName(target.name, name, hash);
    remaining.add(cname);
    tail.push(
      {
        kind: 'createContainer',
        stack: target.name,
        service: name,
        name: cname,
        rev: target.rev,
        hash,
        ref,
        spec: s,
      },
      { kind: 'startContainer', container: cname, service: name },
    );
  }
  const have = new Set(current.volumes);
  for (const v of stackVolumes(target)) {
    if (!have.has(v)) head.push({ kind: 'ensureVolume', stack: target.name, volume: v });
  }
  steps.push(...head, ...tail);
  return steps;
}

/** True when a step changes running containers (used to decide whether a failure must restore). */
export function isDisruptive(step: Step): boolean {
  return step.kind !== 'ensureImage' && step.kind !== 'ensureVolume';
}

/**
 * Reading the engine into plain data for the planner and the health evaluation (read-only calls).
 * Only what is needed is kept: list entries and inspect documents are reduced and dropped at once.
 */
import type Dockerode from 'dockerode';
import { imageRef } from '../../../protocol/src/index.js';
import { statusOf } from './errors.js';
import { volumeBelongsElsewhere } from './executors.js';
import { containerName, volumeName } from './hash.js';
import type { ContainerHealth } from './health.js';
import type { Images } from './images.js';
import type { ContainerState, ObservedContainer, ObservedStack } from './plan.js';
import { stackVolumes } from './policy.js';
import { type DesiredStack, LABELS } from './types.js';

const STATES: ReadonlySet<string> = new Set([
  'created',
  'running',
  'paused',
  'restarting',
  'removing',
  'exited',
  'dead',
]);

function toState(s: string | undefined): ContainerState {
  return s && STATES.has(s) ? (s as ContainerState) : 'dead';
}

/** Filters selecting this site's managed containers (optionally one stack's). */
export function siteFilters(site: string, stack?: string): { label: string[] } {
  const label = [`${LABELS.managed}=true`, `${LABELS.site}=${site}`];
  if (stack !== undefined) label.push(`${LABELS.stack}=${stack}`);
  return { label };
}

function toObserved(c: Dockerode.ContainerInfo): ObservedContainer {
  const l = c.Labels ?? {};
  const exit = /^Exited \((-?\d+)\)/.exec(c.Status ?? '');
  return {
    id: c.Id,
    name: (c.Names?.[0] ?? c.Id).replace(/^\//, ''),
    stack: l[LABELS.stack] ?? '',
    service: l[LABELS.service] ?? '',
    rev: Number(l[LABELS.rev]) || 0,
    hash: l[LABELS.hash] ?? '',
    imageId: c.ImageID,
    state: toState(c.State),
    exitCode: exit ? Number(exit[1]) : -1,
  };
}

/** This site's managed containers, all stacks (list call only). */
export async function listManaged(
  docker: Dockerode,
  site: string,
  stack?: string,
): Promise<ObservedContainer[]> {
  const list = await docker.listContainers({ all: true, filters: siteFilters(site, stack) });
  return list.map(toObserved);
}

/**
 * The stack as the planner needs it. `target` names the images and volumes to look up; without it
 * (removal) only containers and the stack's labelled volumes are read.
 */
export async function observeStack(
  docker: Dockerode,
  images: Images,
  site: string,
  stack: string,
  target: DesiredStack | undefined,
): Promise<ObservedStack> {
  const containers = await listManaged(docker, site, stack);
  const ours = new Set(containers.map((c) => c.id));
  const prefix = `${containerName(stack, '')}`;
  const named = await docker.listContainers({ all: true, filters: { name: [prefix] } });
  const takenNames = named
    .filter((c) => !ours.has(c.Id))
    .map((c) => (c.Names?.[0] ?? '').replace(/^\//, ''))
    .filter((n) => n.startsWith(prefix));

  const volumes: string[] = [];
  if (target) {
    for (const v of stackVolumes(target)) {
      try {
        const info = await docker.getVolume(volumeName(stack, v)).inspect();
        if (!volumeBelongsElsewhere(info.Labels, site, stack)) volumes.push(v);
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    }
  } else {
    const res = await docker.listVolumes({ filters: siteFilters(site, stack) });
    const vp = volumeName(stack, '');
    for (const v of res.Volumes ?? []) if (v.Name.startsWith(vp)) volumes.push(v.Name.slice(vp.length));
  }

  const imgs: Record<string, string> = {};
  if (target) {
    for (const s of Object.values(target.spec.svc)) {
      const ref = imageRef(s);
      if (ref in imgs) continue;
      const found = await images.find(ref);
      if (found) imgs[ref] = found.id;
    }
  }
  return { name: stack, containers, volumes, images: imgs, takenNames };
}

/** Inspects one container for health evaluation; undefined when it is gone. */
export async function inspectHealth(docker: Dockerode, id: string): Promise<ContainerHealth | undefined> {
  try {
    const i = await docker.getContainer(id).inspect();
    const started = Date.parse(i.State.StartedAt);
    const h = (i.State as { Health?: { Status?: string } }).Health?.Status;
    return {
      state: toState(i.State.Status),
      health: h === 'healthy' || h === 'unhealthy' || h === 'starting' ? h : undefined,
      startedAtMs: Number.isFinite(started) && started > 0 ? started : 0,
      exitCode: i.State.ExitCode,
      restartCount: i.RestartCount ?? 0,
    };
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw err;
  }
}

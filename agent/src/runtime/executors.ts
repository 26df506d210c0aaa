/**
 * The executor map: one function per planner step, and the only code that changes the engine through
 * dockerode (observe.ts only reads). Each executor is idempotent where the engine lets it be:
 * stopping a stopped container, removing a removed one, starting a started one all succeed.
 *
 * Container settings (SPEC [RT-2]):
 * - name from the plan (`outpost_<stack>_<service>`, or with a hash suffix when a container that is
 *   not this stack's holds that name); labels LABELS.* plus the spec's `lbl` (ours win);
 * - restart policy: the spec's `rst`, default `unless-stopped` (the engine restarts crashes and
 *   survives a daemon restart; a container stopped by hand stays stopped for the engine, and the
 *   reconciler starts it again: drift, I7);
 * - `mem` → Memory (bytes), `cpu` millicores → NanoCpus (× 1e6), `hc` seconds → Healthcheck ns;
 * - named volumes `outpost_<stack>_<vol>` (labelled, created by ensureVolume), host mounts as binds;
 * - ports: `ExposedPorts` always, `PortBindings` only when the engine can publish (it has a `bridge`
 *   network) and the network mode is not `none`/`host`. A private engine started with
 *   `--bridge=none` cannot publish, so ports are kept in the spec (and in the hash) but not bound.
 */

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import type { Logger } from 'pino';
import type { Healthcheck, Service } from '../../../protocol/src/index.js';
import { asRuntimeError, RuntimeError, statusOf } from './errors.js';
import { volumeName } from './hash.js';
import type { Images } from './images.js';
import type { Step, StepKind } from './plan.js';
import { parseVolume } from './policy.js';
import { LABELS } from './types.js';

export interface ExecContext {
  readonly docker: Dockerode;
  readonly site: string;
  readonly log: Logger;
  readonly images: Images;
  /** Whether the engine can publish ports (decided once, lazily). */
  readonly canPublish: () => Promise<boolean>;
  readonly stopTimeoutSec: number;
  /**
   * Update locks ([MW-6]): `<locksDir>/<stack>` is bind-mounted read-write at `/run/outpost` in every
   * container of the stack (the agent's own mount, not a spec host mount: [SEC-POL] does not apply).
   */
  readonly locksDir?: string;
}

/** Where a stack's update-lock folder appears inside its containers ([MW-6]). */
export const LOCK_TARGET = '/run/outpost';

type Executor<K extends StepKind> = (ctx: ExecContext, step: Extract<Step, { kind: K }>) => Promise<void>;

const SEC_NS = 1_000_000_000;

function healthcheck(hc: Healthcheck): Dockerode.HealthConfig {
  const [first] = hc.test;
  const test =
    first === 'CMD' || first === 'CMD-SHELL' || first === 'NONE' ? [...hc.test] : ['CMD', ...hc.test];
  return {
    Test: test,
    ...(hc.int !== undefined && { Interval: hc.int * SEC_NS }),
    ...(hc.to !== undefined && { Timeout: hc.to * SEC_NS }),
    ...(hc.ret !== undefined && { Retries: hc.ret }),
    ...(hc.sp !== undefined && { StartPeriod: hc.sp * SEC_NS }),
  };
}

function ports(s: Service, publish: boolean) {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
  for (const p of s.ports ?? []) {
    const [spec = '', proto = 'tcp'] = p.split('/');
    const parts = spec.split(':');
    const container = parts[parts.length - 1] ?? '';
    const host = parts[parts.length - 2] ?? '';
    const ip = parts.length === 3 ? (parts[0] ?? '') : '';
    const key = `${container}/${proto}`;
    exposed[key] = {};
    if (publish) bindings[key] = [...(bindings[key] ?? []), { HostIp: ip, HostPort: host }];
  }
  return { exposed, bindings };
}

/** The engine's container create options for a planned container. */
export function containerOptions(
  site: string,
  step: Extract<Step, { kind: 'createContainer' }>,
  image: string,
  canPublish: boolean,
  locksDir?: string,
): Dockerode.ContainerCreateOptions {
  const s = step.spec;
  const net = s.net ?? 'default';
  const publish = canPublish && net !== 'none' && net !== 'host';
  const { exposed, bindings } = ports(s, publish);
  const mounts: Dockerode.MountSettings[] = [];
  for (const v of s.vols ?? []) {
    const m = parseVolume(v);
    if (!m) throw new RuntimeError('malformed', `${step.service}: bad volume entry`);
    mounts.push(
      m.kind === 'named'
        ? { Type: 'volume', Source: volumeName(step.stack, m.volume), Target: m.target, ReadOnly: m.readOnly }
        : { Type: 'bind', Source: m.source, Target: m.target, ReadOnly: m.readOnly },
    );
  }
  if (locksDir !== undefined)
    mounts.push({ Type: 'bind', Source: join(locksDir, step.stack), Target: LOCK_TARGET, ReadOnly: false });
  return {
    name: step.name,
    Image: image,
    ...(s.cmd && { Cmd: [...s.cmd] }),
    ...(s.ep && { Entrypoint: [...s.ep] }),
    ...(s.env && { Env: Object.entries(s.env).map(([k, v]) => `${k}=${v}`) }),
    ...(s.user !== undefined && { User: s.user }),
    ...(s.hc && { Healthcheck: healthcheck(s.hc) }),
    ExposedPorts: exposed,
    Labels: {
      ...s.lbl,
      [LABELS.managed]: 'true',
      [LABELS.site]: site,
      [LABELS.stack]: step.stack,
      [LABELS.service]: step.service,
      [LABELS.rev]: String(step.rev),
      [LABELS.hash]: step.hash,
    },
    HostConfig: {
      RestartPolicy: { Name: s.rst ?? 'unless-stopped' },
      NetworkMode: net,
      Privileged: s.priv === true,
      Mounts: mounts,
      PortBindings: bindings,
      ...(s.mem !== undefined && { Memory: s.mem }),
      ...(s.cpu !== undefined && { NanoCpus: s.cpu * 1_000_000 }),
    },
  };
}

function volumeLabels(site: string, stack: string): Record<string, string> {
  return { [LABELS.managed]: 'true', [LABELS.site]: site, [LABELS.stack]: stack };
}

/** A volume is usable by the stack unless it is labelled as another site's or stack's. */
export function volumeBelongsElsewhere(
  labels: Record<string, string> | null | undefined,
  site: string,
  stack: string,
): boolean {
  if (labels?.[LABELS.managed] !== 'true') return false;
  return labels[LABELS.site] !== site || labels[LABELS.stack] !== stack;
}

const ensureImage: Executor<'ensureImage'> = async (ctx, step) => {
  await ctx.images.ensure(step.ref);
};

const ensureVolume: Executor<'ensureVolume'> = async (ctx, step) => {
  const name = volumeName(step.stack, step.volume);
  try {
    const info = await ctx.docker.getVolume(name).inspect();
    if (volumeBelongsElsewhere(info.Labels, ctx.site, step.stack)) {
      throw new RuntimeError('runtime-error', `volume ${name} belongs to another stack`);
    }
    return;
  } catch (err) {
    if (statusOf(err) !== 404) throw err;
  }
  await ctx.docker.createVolume({ Name: name, Labels: volumeLabels(ctx.site, step.stack) });
};

const removeVolume: Executor<'removeVolume'> = async (ctx, step) => {
  const name = volumeName(step.stack, step.volume);
  const vol = ctx.docker.getVolume(name);
  try {
    const info = await vol.inspect();
    const l = info.Labels ?? {};
    // Only volumes we created for this stack are ever deleted.
    if (l[LABELS.managed] !== 'true' || l[LABELS.site] !== ctx.site || l[LABELS.stack] !== step.stack) return;
    await vol.remove();
  } catch (err) {
    if (statusOf(err) !== 404) throw err;
  }
};

const stopContainer: Executor<'stopContainer'> = async (ctx, step) => {
  try {
    await ctx.docker.getContainer(step.id).stop({ t: ctx.stopTimeoutSec });
  } catch (err) {
    const st = statusOf(err);
    if (st !== 304 && st !== 404) throw err;
  }
};

const removeContainer: Executor<'removeContainer'> = async (ctx, step) => {
  try {
    await ctx.docker.getContainer(step.id).remove({ force: true, v: false });
  } catch (err) {
    const st = statusOf(err);
    // 404: already gone; 409 "removal already in progress": it will be gone.
    if (st !== 404 && !(st === 409 && /already in progress/i.test(String((err as Error).message)))) throw err;
  }
};

const createContainer: Executor<'createContainer'> = async (ctx, step) => {
  const image = await ctx.images.ensure(step.ref);
  if (ctx.locksDir !== undefined) mkdirSync(join(ctx.locksDir, step.stack), { recursive: true });
  const opts = containerOptions(ctx.site, step, image.ref, await ctx.canPublish(), ctx.locksDir);
  await ctx.docker.createContainer(opts);
};

const startContainer: Executor<'startContainer'> = async (ctx, step) => {
  try {
    await ctx.docker.getContainer(step.container).start();
  } catch (err) {
    if (statusOf(err) !== 304) throw err;
  }
};

const unpauseContainer: Executor<'unpauseContainer'> = async (ctx, step) => {
  try {
    await ctx.docker.getContainer(step.container).unpause();
  } catch (err) {
    if (statusOf(err) !== 304) throw err;
  }
};

export const executors: { readonly [K in StepKind]: Executor<K> } = {
  ensureImage,
  ensureVolume,
  removeVolume,
  stopContainer,
  removeContainer,
  createContainer,
  startContainer,
  unpauseContainer,
};

/** Runs one step; engine errors become `runtime-error` (`image-unavailable` from image steps). */
export async function execute(ctx: ExecContext, step: Step): Promise<void> {
  const run = executors[step.kind] as Executor<StepKind>;
  try {
    await run(ctx, step as never);
  } catch (err) {
    throw asRuntimeError(err, describeStep(step));
  }
}

export function describeStep(step: Step): string {
  switch (step.kind) {
    case 'ensureImage':
      return `ensureImage ${step.ref}`;
    case 'ensureVolume':
    case 'removeVolume':
      return `${step.kind} ${volumeName(step.stack, step.volume)}`;
    case 'createContainer':
      return `createContainer ${step.name}`;
    case 'stopContainer':
    case 'removeContainer':
      return `${step.kind} ${step.name}`;
    default:
      return `${step.kind} ${step.container}`;
  }
}

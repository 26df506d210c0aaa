/**
 * apply's sequence around the health gate (I7: health-gated updates roll back locally, without
 * waiting for the controller):
 *
 * 1. converge to `target`; an engine failure before anything disruptive ran (image pulls and volume
 *    creation come first) fails with nothing changed; after that, `previous` is restored first;
 * 2. the gate: every service of `target` must be healthy (see health.ts; `gate.runningForMs` for
 *    services without a healthcheck) within `gate.deadlineMs` after converging — polled, not evented;
 * 3. otherwise `previous` is re-converged (its containers re-created from its images, which are still
 *    present), or the stack removed when there is none, and the outcome is `rolled-back` /
 *    `health-timeout`. A failure while restoring is reported as `failed` / `runtime-error`.
 */
import type { Logger } from 'pino';
import type { Clock, Service } from '../../../protocol/src/index.js';
import { asRuntimeError, describe } from './errors.js';
import { type ContainerHealth, serviceHealth } from './health.js';
import { isDisruptive, type Step } from './plan.js';
import type { ApplyOutcome, DesiredStack, HealthGate } from './types.js';

export interface GateDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly pollMs: number;
  readonly closed: () => boolean;
  /** Observes, plans and executes `target` (undefined: removal), reporting each step before it runs. */
  readonly converge: (
    stack: string,
    target: DesiredStack | undefined,
    onStep?: (s: Step) => void,
  ) => Promise<void>;
  /** The container health of each of `target`'s services (undefined: no container with its hash). */
  readonly healthOf: (
    target: DesiredStack,
  ) => Promise<Array<{ service: string; spec: Service; health: ContainerHealth | undefined }>>;
}

export interface GatedApply {
  readonly outcome: ApplyOutcome;
  /** Whether anything disruptive ran (containers stopped, removed, created or started). */
  readonly touched: boolean;
  /** What the stack was left converged to (undefined: removed, or unchanged when !touched). */
  readonly now: DesiredStack | undefined;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

async function restore(
  d: GateDeps,
  stack: string,
  previous: DesiredStack | undefined,
): Promise<string | undefined> {
  try {
    await d.converge(stack, previous);
    return undefined;
  } catch (err) {
    d.log.error(
      { stack, prevRev: previous?.rev ?? 0, err: describe(err) },
      'restoring previous revision failed',
    );
    return describe(err);
  }
}

export async function applyWithGate(
  d: GateDeps,
  target: DesiredStack,
  previous: DesiredStack | undefined,
  gate: HealthGate,
): Promise<GatedApply> {
  const stack = target.name;
  const log = d.log.child({ stack, rev: target.rev });
  let touched = false;
  log.info({ prevRev: previous?.rev ?? 0 }, 'apply');
  try {
    await d.converge(stack, target, (s) => {
      if (isDisruptive(s)) touched = true;
    });
  } catch (err) {
    const e = asRuntimeError(err, 'apply');
    log.warn({ reason: e.code, err: e.detail, touched }, 'apply failed');
    if (!touched)
      return { outcome: { status: 'failed', reason: e.code, detail: e.detail }, touched, now: undefined };
    const bad = await restore(d, stack, previous);
    const detail = bad ? `${e.detail}; restoring previous failed: ${bad}` : e.detail;
    return {
      outcome: { status: 'failed', reason: e.code, detail: detail.slice(0, 256) },
      touched,
      now: previous,
    };
  }

  const deadline = d.clock.now() + gate.deadlineMs;
  let last = 'no reading';
  for (;;) {
    if (d.closed()) {
      return {
        outcome: {
          status: 'failed',
          reason: 'runtime-error',
          detail: 'runtime closed during the health gate',
        },
        touched: true,
        now: target,
      };
    }
    try {
      const hs = await d.healthOf(target);
      const now = d.clock.now();
      const states = hs.map((h) => ({
        s: h.service,
        h: serviceHealth(h.health, h.spec, now, gate.runningForMs),
      }));
      if (states.every((x) => x.h === 'healthy')) {
        log.info('applied: healthy');
        return { outcome: { status: 'applied' }, touched: true, now: target };
      }
      last = states
        .filter((x) => x.h !== 'healthy')
        .map((x) => `${x.s}: ${x.h}`)
        .join(', ');
    } catch (err) {
      last = `health reading failed: ${describe(err)}`;
    }
    const left = deadline - d.clock.now();
    if (left <= 0) break;
    await sleep(Math.min(d.pollMs, left));
  }

  log.warn({ health: last, prevRev: previous?.rev ?? 0 }, 'health gate failed; rolling back');
  const detail = `not healthy within ${gate.deadlineMs} ms: ${last}`.slice(0, 200);
  const bad = await restore(d, stack, previous);
  if (bad) {
    return {
      outcome: {
        status: 'failed',
        reason: 'runtime-error',
        detail: `${detail}; rollback failed: ${bad}`.slice(0, 256),
      },
      touched: true,
      now: previous,
    };
  }
  log.info({ restoredRev: previous?.rev ?? 0 }, 'rolled back');
  return {
    outcome: { status: 'rolled-back', reason: 'health-timeout', detail, restoredRev: previous?.rev ?? 0 },
    touched: true,
    now: previous,
  };
}

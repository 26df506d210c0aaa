/**
 * DockerRuntime: the StackRuntime over a Docker (or Podman) engine through dockerode.
 *
 * apply = validate (policy, shape: refused before anything is touched) → observe → plan → execute
 * → health gate → on failure restore `previous` by planning it against what runs now (or remove the
 * stack when there is none). Replaced containers are removed at once, not kept stopped: restoring
 * re-creates the previous revision's containers from its images, which are still present (images
 * are never deleted by the runtime), and a crash in the middle leaves nothing half-renamed to
 * reason about. Every operation on a stack holds that stack's mutex; the reconciler's passes too.
 *
 * What the reconciler converges a stack to: the outcome of the last apply/remove this runtime ran
 * for it (target after `applied`, previous after a rollback, nothing after remove) until
 * `desired()` agrees with that outcome; from then on `desired()`. So a core that updates its
 * desired state after apply returns never sees the loop fight it, and never re-deploys a revision
 * that was just rolled back. A stack in neither is left alone (reported, never deleted on a guess).
 */
import type Dockerode from 'dockerode';
import type { Logger } from 'pino';
import { type Clock, type StackState, systemClock } from '../../../protocol/src/index.js';
import { StartBackoff } from './backoff.js';
import { asRuntimeError, describe, RuntimeError, statusOf } from './errors.js';
import { describeStep, type ExecContext, execute } from './executors.js';
import { applyWithGate, type GateDeps } from './gate.js';
import { serviceHash } from './hash.js';
import { Images } from './images.js';
import { KeyedMutex } from './mutex.js';
import { inspectHealth, listManaged, observeStack } from './observe.js';
import { plan, type Step } from './plan.js';
import { DEFAULT_POLICY, validateTarget } from './policy.js';
import { Reconciler } from './reconciler.js';
import { buildStackState, type SeenContainer } from './snapshot.js';
import type { ApplyOutcome, DesiredStack, HealthGate, RuntimePolicy, StackRuntime } from './types.js';

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export interface DockerRuntimeOptions {
  readonly docker: Dockerode;
  /** This site's id: written to every label, and only containers carrying it are ours. */
  readonly site: string;
  readonly log: Logger;
  readonly policy?: RuntimePolicy;
  /** Site registry mirror (`host[:port]`) that missing images are pulled through. */
  readonly registryMirror?: string;
  readonly clock?: Clock;
  /** Pull timeout (default 15 min). */
  readonly pullTimeoutMs?: number;
  /** Grace given to a container on stop before SIGKILL (default 10 s). */
  readonly stopTimeoutSec?: number;
  /** Health gate polling interval (default 500 ms). */
  readonly gatePollMs?: number;
  /** In snapshots, services without a healthcheck are `healthy` after running this long (default 10 s). */
  readonly settleMs?: number;
  /** Reconciler full-pass period (default 30 s) and event debounce (default 500 ms). */
  readonly reconcilePeriodMs?: number;
  readonly reconcileDebounceMs?: number;
  /** Update locks: `<locksDir>/<stack>` is mounted at `/run/outpost` in the stack's containers ([MW-6]). */
  readonly locksDir?: string;
}

function validGate(g: HealthGate | undefined): boolean {
  const ok = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  return ok(g?.deadlineMs) && ok(g?.runningForMs);
}

export function createDockerRuntime(opts: DockerRuntimeOptions): DockerRuntime {
  return new DockerRuntime(opts);
}

export class DockerRuntime implements StackRuntime {
  private readonly docker: Dockerode;
  private readonly site: string;
  private readonly log: Logger;
  private readonly policy: RuntimePolicy;
  private readonly clock: Clock;
  private readonly images: Images;
  private readonly exec: ExecContext;
  private readonly mutex = new KeyedMutex();
  private readonly backoff = new StartBackoff();
  /** Outcome of the last apply/remove per stack (null: removed) until desired() agrees with it. */
  private readonly outcomes = new Map<string, DesiredStack | null>();
  private desired: (() => readonly DesiredStack[]) | undefined;
  private reconciler: Reconciler | undefined;
  private publish: Promise<boolean> | undefined;
  private closed = false;

  constructor(private readonly opts: DockerRuntimeOptions) {
    this.docker = opts.docker;
    this.site = opts.site;
    this.log = opts.log.child({ component: 'agent.runtime', site: opts.site });
    this.policy = opts.policy ?? DEFAULT_POLICY;
    this.clock = opts.clock ?? systemClock;
    this.images = new Images(this.docker, this.log, opts.registryMirror, opts.pullTimeoutMs ?? 15 * 60_000);
    this.exec = {
      docker: this.docker,
      site: this.site,
      log: this.log,
      images: this.images,
      canPublish: () => this.canPublish(),
      stopTimeoutSec: opts.stopTimeoutSec ?? 10,
      ...(opts.locksDir !== undefined ? { locksDir: opts.locksDir } : {}),
    };
  }

  /** Whether the engine can publish ports: it has a `bridge` network (asked once). */
  private canPublish(): Promise<boolean> {
    this.publish ??= this.docker
      .getNetwork('bridge')
      .inspect()
      .then(
        () => true,
        (err: unknown) => {
          if (statusOf(err) !== 404) {
            this.publish = undefined; // ask again next time
            throw err;
          }
          this.log.warn('engine has no bridge network: ports are exposed but not published');
          return false;
        },
      );
    return this.publish;
  }

  private async run(steps: readonly Step[], onStep?: (s: Step) => void): Promise<void> {
    for (const step of steps) {
      onStep?.(step);
      this.log.debug({ step: describeStep(step) }, 'step');
      await execute(this.exec, step);
    }
  }

  /** Converges a stack to `target` (or removes it) without a gate. */
  private async converge(
    stack: string,
    target: DesiredStack | undefined,
    removeVolumes = false,
  ): Promise<void> {
    const current = await observeStack(this.docker, this.images, this.site, stack, target);
    await this.run(plan(current, target, { removeVolumes }));
  }

  private gateDeps(): GateDeps {
    return {
      log: this.log,
      clock: this.clock,
      pollMs: this.opts.gatePollMs ?? 500,
      closed: () => this.closed,
      converge: async (stack, target, onStep) => {
        const current = await observeStack(this.docker, this.images, this.site, stack, target);
        await this.run(plan(current, target), onStep);
      },
      healthOf: async (target) => {
        const seen = await this.seen(target.name);
        return Object.entries(target.spec.svc).map(([n, s]) => {
          const hash = serviceHash(target.name, n, s);
          return { service: n, spec: s, health: seen.find((x) => x.c.service === n && x.c.hash === hash)?.h };
        });
      },
    };
  }

  async apply(
    target: DesiredStack,
    previous: DesiredStack | undefined,
    gate: HealthGate,
  ): Promise<ApplyOutcome> {
    const refused = validateTarget(target, this.policy);
    if (refused) {
      this.log.warn({ stack: target?.name, rev: target?.rev, reason: refused.reason }, 'apply refused');
      if (typeof target?.name === 'string' && NAME.test(target.name)) {
        this.settle(target.name, this.usable(target.name, previous), false);
      }
      return { status: 'failed', ...refused };
    }
    const prev = this.usable(target.name, previous);
    if (!validGate(gate)) {
      this.settle(target.name, prev, false);
      return { status: 'failed', reason: 'malformed', detail: 'health gate times must be finite and >= 0' };
    }
    if (this.closed) return { status: 'failed', reason: 'runtime-error', detail: 'runtime is closed' };
    return this.mutex.run(target.name, async (): Promise<ApplyOutcome> => {
      let out: Awaited<ReturnType<typeof applyWithGate>>;
      try {
        out = await applyWithGate(this.gateDeps(), target, prev, gate);
      } catch (err) {
        this.log.error({ stack: target.name, err: describe(err) }, 'apply: unexpected error');
        return { status: 'failed', reason: 'internal', detail: describe(err) };
      }
      const changed = out.outcome.status !== 'failed' || out.touched;
      this.settle(target.name, changed ? out.now : prev, changed);
      return out.outcome;
    });
  }

  /** `previous` when it can be restored (same stack, passes policy), else undefined. */
  private usable(stack: string, previous: DesiredStack | undefined): DesiredStack | undefined {
    if (previous && (previous.name !== stack || validateTarget(previous, this.policy))) {
      this.log.warn({ stack, prevRev: previous.rev }, 'previous revision unusable for rollback');
      return undefined;
    }
    return previous;
  }

  /**
   * Records what the reconciler converges `stack` to until desired() agrees (see the header). A
   * failed apply that touched nothing leaves an earlier record alone, else records `previous`: the
   * loop must never deploy a target whose apply failed, without its gate.
   */
  private settle(stack: string, now: DesiredStack | undefined, force: boolean): void {
    if (force || !this.outcomes.has(stack)) this.outcomes.set(stack, now ?? null);
  }

  async inEffect(target: DesiredStack): Promise<boolean> {
    if (validateTarget(target, { allowTags: true })) return false;
    return this.mutex.run(target.name, async () => {
      const current = await observeStack(this.docker, this.images, this.site, target.name, target);
      if (plan(current, target).length > 0) return false;
      return Object.keys(target.spec.svc).every((n) => current.containers.some((c) => c.service === n));
    });
  }

  async remove(stack: string, opts: { volumes: boolean }): Promise<void> {
    if (!NAME.test(stack)) throw new RuntimeError('malformed', 'stack name does not match the name pattern');
    await this.mutex.run(stack, async () => {
      try {
        await this.converge(stack, undefined, opts.volumes === true);
      } catch (err) {
        throw asRuntimeError(err, `remove ${stack}`);
      }
      this.outcomes.set(stack, null);
      this.backoff.forget(`${stack}/`);
      this.log.info({ stack, volumes: opts.volumes === true }, 'stack removed');
    });
  }

  async restart(stack: string, services: readonly string[], notBeforeMs: number): Promise<void> {
    if (!NAME.test(stack)) throw new RuntimeError('malformed', 'stack name does not match the name pattern');
    if (!Number.isFinite(notBeforeMs))
      throw new RuntimeError('malformed', 'notBeforeMs is not a finite time');
    await this.mutex.run(stack, async () => {
      const all = await listManaged(this.docker, this.site, stack);
      if (all.length === 0) throw new RuntimeError('unknown-stack', `stack ${stack} is not deployed`);
      const only = new Set(services);
      for (const c of all) {
        if (only.size > 0 && !only.has(c.service)) continue;
        if (c.state === 'removing' || c.state === 'dead') continue;
        const h = await inspectHealth(this.docker, c.id);
        // I2: a restart resumed after a crash does not restart what it already restarted.
        if (!h || h.startedAtMs >= notBeforeMs) continue;
        try {
          await this.docker.getContainer(c.id).restart({ t: this.exec.stopTimeoutSec });
        } catch (err) {
          if (statusOf(err) !== 404) throw asRuntimeError(err, `restart ${c.name}`);
        }
        this.log.info({ stack, service: c.service }, 'service restarted');
      }
    });
  }

  private async seen(stack?: string): Promise<SeenContainer[]> {
    const list = await listManaged(this.docker, this.site, stack);
    const out: SeenContainer[] = [];
    for (const c of list) out.push({ c, h: await inspectHealth(this.docker, c.id) });
    return out;
  }

  async snapshot(): Promise<StackState[]> {
    const seen = await this.seen();
    const by = new Map<string, SeenContainer[]>();
    for (const s of seen) {
      const stack = s.c.stack;
      if (!NAME.test(stack)) continue;
      by.set(stack, [...(by.get(stack) ?? []), s]);
    }
    for (const d of this.knownTargets()) if (!by.has(d.name)) by.set(d.name, []);
    const now = this.clock.now();
    const settle = this.opts.settleMs ?? 10_000;
    return [...by.keys()]
      .sort()
      .slice(0, 256)
      .map((stack) => buildStackState(stack, by.get(stack) ?? [], this.targetFor(stack), now, settle));
  }

  /** What the stack should be converged to by the reconciler (see the header). */
  private targetFor(stack: string): DesiredStack | undefined {
    let d: DesiredStack | undefined;
    try {
      d = this.desired?.().find((x) => x.name === stack);
    } catch (err) {
      this.log.error({ err: describe(err) }, 'desired() failed');
    }
    const o = this.outcomes.get(stack);
    if (o === undefined) return d;
    if (o === null ? d === undefined : d !== undefined && d.rev === o.rev && d.digest === o.digest) {
      this.outcomes.delete(stack);
      return d;
    }
    return o ?? undefined;
  }

  private knownTargets(): DesiredStack[] {
    const names = new Set<string>(this.outcomes.keys());
    try {
      for (const d of this.desired?.() ?? []) names.add(d.name);
    } catch {
      // reported by targetFor
    }
    return [...names].flatMap((n) => this.targetFor(n) ?? []);
  }

  /** One reconcile pass over a stack: revert drift towards its target (never remove it). */
  private async pass(stack: string): Promise<void> {
    await this.mutex.run(stack, async () => {
      if (this.closed) return;
      const target = this.targetFor(stack);
      if (!target) return; // unknown or removed: left alone, never deleted on a guess (I7)
      const refused = validateTarget(target, this.policy);
      if (refused) {
        this.log.warn(
          { stack, rev: target.rev, reason: refused.reason },
          'desired stack refused; not reconciled',
        );
        return;
      }
      const current = await observeStack(this.docker, this.images, this.site, stack, target);
      const now = this.clock.now();
      const steps = plan(current, target).filter((s) => {
        if (s.kind !== 'startContainer' || current.containers.every((c) => c.id !== s.container)) return true;
        const t = this.backoff.take(`${stack}/${s.service}`, now);
        if (!t.allowed)
          this.log.warn({ stack, service: s.service, retryAt: t.retryAt }, 'crash loop: start deferred');
        return t.allowed;
      });
      if (steps.length === 0) return;
      this.log.info({ stack, rev: target.rev, steps: steps.map(describeStep) }, 'reverting drift');
      try {
        await this.run(steps);
      } catch (err) {
        this.log.error({ stack, err: describe(err) }, 'reverting drift failed');
      }
    });
  }

  async startReconciler(
    desired: () => readonly DesiredStack[],
    onChange: (stacks: StackState[]) => void,
  ): Promise<void> {
    if (this.reconciler) throw new RuntimeError('internal', 'reconciler already started');
    if (this.closed) throw new RuntimeError('runtime-error', 'runtime is closed');
    this.desired = desired;
    this.reconciler = new Reconciler({
      docker: this.docker,
      site: this.site,
      log: this.log.child({ component: 'agent.reconciler' }),
      periodMs: this.opts.reconcilePeriodMs ?? 30_000,
      debounceMs: this.opts.reconcileDebounceMs ?? 500,
      stacks: () => this.knownTargets().map((d) => d.name),
      pass: (stack) => this.pass(stack),
      snapshot: () => this.snapshot(),
      onChange,
    });
    await this.reconciler.start();
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.reconciler?.close();
  }
}

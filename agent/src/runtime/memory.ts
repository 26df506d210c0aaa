/**
 * MemoryRuntime: a StackRuntime with no containers, for the agent core's tests and the fleet
 * simulator. It follows DockerRuntime's semantics: apply is declarative and idempotent (only missing or
 * different "containers" are created; a container's identity is its stack, service, revision and
 * spec hash), a health gate that rolls back to the previous revision, restart that skips containers
 * started at or after `notBeforeMs`, and a reconciler that restarts crashed services and reverts
 * drift for the desired stacks only.
 *
 * Test hooks: injectable apply failures, health failures, per-stack delays, crashes and drift. An
 * optional effect log (JSON lines, appended synchronously) records every create/start/stop/remove/
 * restart, so a test can count effects across a SIGKILL of the agent process, and a new MemoryRuntime
 * can rebuild its containers from it (`restore: 'running'` = the engine survived the agent;
 * `'stopped'` = the device rebooted and every container is stopped).
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import {
  type Clock,
  canonicalSpec,
  type Health,
  type ReasonCode,
  type Service,
  type StackState,
  systemClock,
} from '../../../protocol/src/index.js';
import { faultPoint } from '../core/fault.js';
import { DEFAULT_POLICY, validateTarget } from './policy.js';
import type { ApplyOutcome, DesiredStack, HealthGate, RuntimePolicy, StackRuntime } from './types.js';

export type EffectOp = 'create' | 'start' | 'stop' | 'remove' | 'restart' | 'crash' | 'volumes-removed';

export interface Effect {
  readonly op: EffectOp;
  readonly stack: string;
  readonly svc: string;
  readonly rev: number;
  readonly hash: string;
  readonly at: number;
}

interface Container {
  rev: number;
  hash: string;
  running: boolean;
  startedAt: number;
  restarts: number;
}

export interface MemoryRuntimeOptions {
  readonly clock?: Clock;
  /** JSON-lines effect log (appended synchronously). */
  readonly effectLog?: string;
  /** Rebuild containers from `effectLog` at construction. */
  readonly restore?: 'none' | 'running' | 'stopped';
  /** Delay of every apply (simulates pulls and start-up). */
  readonly applyDelayMs?: number;
  readonly reconcileIntervalMs?: number;
  /** Site policy, checked before anything is touched (as DockerRuntime does). */
  readonly policy?: RuntimePolicy;
  /**
   * What a service's image does here: `ok`, `unhealthy` (runs, never becomes healthy: the health gate
   * rolls it back) or `missing` (cannot be obtained: `image-unavailable`, nothing touched).
   */
  readonly image?: (svc: Service) => ImageBehaviour;
}

export type ImageBehaviour = 'ok' | 'unhealthy' | 'missing';

interface Failure {
  readonly kind: 'apply' | 'health';
  readonly reason: ReasonCode;
  readonly rev?: number;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** sha256 (hex) of a service's canonical spec: the container's identity besides stack/service/rev. */
export function serviceHash(svc: Service): string {
  const canon = canonicalSpec({ svc: { s: svc } }).svc['s'];
  const json = JSON.stringify(canon, (_k, v: unknown) => (v instanceof Uint8Array ? hex(v) : v));
  return createHash('sha256').update(json).digest('hex');
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class MemoryRuntime implements StackRuntime {
  /** stack -> service -> container */
  private readonly stacks = new Map<string, Map<string, Container>>();
  /** The last target converged per stack (its revision is the stack's while every hash matches). */
  private readonly targets = new Map<string, DesiredStack>();
  private readonly failures = new Map<string, Failure>();
  private readonly unhealthy = new Set<string>();
  private readonly delays = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly clock: Clock;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Effects recorded by this instance (the log file has every instance's). */
  readonly effects: Effect[] = [];

  constructor(private readonly opts: MemoryRuntimeOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    if (opts.effectLog && opts.restore && opts.restore !== 'none') this.restore(opts.restore);
  }

  // ---- test hooks ---------------------------------------------------------------------------------

  /** The next applies of `stack` (at `rev`, or any) fail without touching anything. */
  injectApplyFailure(stack: string, reason: ReasonCode = 'image-unavailable', rev?: number): void {
    this.failures.set(stack, { kind: 'apply', reason, ...(rev === undefined ? {} : { rev }) });
  }

  /** Applies of `stack` (at `rev`, or any) converge but fail the health gate, and are rolled back. */
  injectHealthFailure(stack: string, rev?: number): void {
    this.failures.set(stack, {
      kind: 'health',
      reason: 'health-timeout',
      ...(rev === undefined ? {} : { rev }),
    });
  }

  clearFailures(stack?: string): void {
    if (stack) this.failures.delete(stack);
    else this.failures.clear();
  }

  setApplyDelay(stack: string, ms: number): void {
    this.delays.set(stack, ms);
  }

  /** A service's process exits (the reconciler restarts it). */
  crash(stack: string, svc: string): void {
    const c = this.stacks.get(stack)?.get(svc);
    if (!c) throw new Error(`no container ${stack}/${svc}`);
    c.running = false;
    c.restarts++;
    this.record('crash', stack, svc, c);
  }

  /** Somebody changed a container by hand (the reconciler reverts it). */
  drift(stack: string, svc: string): void {
    const c = this.stacks.get(stack)?.get(svc);
    if (!c) throw new Error(`no container ${stack}/${svc}`);
    c.hash = `drifted-${c.hash}`;
  }

  setUnhealthy(stack: string, svc: string, unhealthy: boolean): void {
    if (unhealthy) this.unhealthy.add(`${stack}/${svc}`);
    else this.unhealthy.delete(`${stack}/${svc}`);
  }

  /** Effects from the log file (all instances), or this instance's when there is no log. */
  allEffects(): Effect[] {
    if (!this.opts.effectLog) return [...this.effects];
    return readEffectLog(this.opts.effectLog);
  }

  // ---- StackRuntime -------------------------------------------------------------------------------

  async snapshot(): Promise<StackState[]> {
    const out: StackState[] = [];
    for (const [name, svcs] of [...this.stacks].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (svcs.size === 0) continue;
      const svc = [...svcs].map(([n, c]) => ({
        n,
        st: c.running ? 'running' : 'exited',
        h: this.health(name, n, c),
        rs: c.restarts,
      }));
      const t = this.targets.get(name);
      const rev = t && this.matches(t, false) ? t.rev : Math.max(...[...svcs.values()].map((c) => c.rev));
      out.push({ name, rev, want: t?.rev ?? rev, h: aggregate(svc.map((s) => s.h)), svc });
    }
    return out;
  }

  apply(target: DesiredStack, previous: DesiredStack | undefined, _gate: HealthGate): Promise<ApplyOutcome> {
    return this.locked(target.name, async () => {
      const refusal = validateTarget(target, this.opts.policy ?? DEFAULT_POLICY);
      if (refusal) return { status: 'failed', reason: refusal.reason, detail: refusal.detail } as const;
      const delay = this.delays.get(target.name) ?? this.opts.applyDelayMs ?? 0;
      if (delay > 0) await sleep(delay);
      const f = this.failures.get(target.name);
      const hit = f && (f.rev === undefined || f.rev === target.rev) ? f : undefined;
      if (hit?.kind === 'apply') {
        return { status: 'failed', reason: hit.reason, detail: `injected ${hit.reason}` } as const;
      }
      const missing = Object.entries(target.spec.svc).find(([, sv]) => this.behaviour(sv) === 'missing');
      if (missing) {
        return {
          status: 'failed',
          reason: 'image-unavailable',
          detail: `${missing[0]}: image ${missing[1].img} is not available`,
        } as const;
      }
      this.converge(target, true);
      const sick = Object.entries(target.spec.svc).find(
        ([n, sv]) => this.behaviour(sv) === 'unhealthy' || this.unhealthy.has(`${target.name}/${n}`),
      );
      if (hit?.kind === 'health' || sick) {
        if (previous) this.converge(previous, false);
        else this.removeStack(target.name, false);
        return {
          status: 'rolled-back',
          reason: 'health-timeout',
          detail: sick ? `${sick[0]} never became healthy` : 'injected health failure',
          restoredRev: previous?.rev ?? 0,
        } as const;
      }
      return { status: 'applied' } as const;
    });
  }

  async inEffect(target: DesiredStack): Promise<boolean> {
    return this.matches(target, true);
  }

  /** Public probes for tests and the conformance suite. */
  startedAt(stack: string, svc: string): number | undefined {
    return this.stacks.get(stack)?.get(svc)?.startedAt;
  }

  units(stack: string): number {
    return this.stacks.get(stack)?.size ?? 0;
  }

  remove(stack: string, opts: { volumes: boolean }): Promise<void> {
    return this.locked(stack, async () => this.removeStack(stack, opts.volumes));
  }

  restart(stack: string, services: readonly string[], notBeforeMs: number): Promise<void> {
    return this.locked(stack, async () => {
      const svcs = this.stacks.get(stack);
      if (!svcs) throw Object.assign(new Error(`stack ${stack} is not running`), { code: 'unknown-stack' });
      for (const [n, c] of svcs) {
        if (services.length > 0 && !services.includes(n)) continue;
        if (c.running && c.startedAt >= notBeforeMs) continue;
        c.running = true;
        c.startedAt = this.clock.now();
        this.record('restart', stack, n, c);
      }
    });
  }

  async startReconciler(
    desired: () => readonly DesiredStack[],
    onChange: (stacks: StackState[]) => void,
  ): Promise<void> {
    const pass = async () => {
      let changed = false;
      for (const d of desired()) {
        if (this.closed) return;
        if (validateTarget(d, this.opts.policy ?? DEFAULT_POLICY)) continue;
        // Read the target again once the stack's lock is held: an apply that held the lock meanwhile
        // may have moved desired() on, and converging to the stale entry would revert it (I2, I3).
        changed =
          (await this.locked(d.name, async () => {
            const now = desired().find((x) => x.name === d.name);
            return now ? this.converge(now, false) : false;
          })) || changed;
      }
      if (changed && !this.closed) onChange(await this.snapshot());
    };
    await pass();
    const every = this.opts.reconcileIntervalMs ?? 1000;
    const tick = () => {
      this.timer = setTimeout(() => {
        pass().then(tick, tick);
      }, every);
      this.timer.unref();
    };
    if (!this.closed) tick();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.allSettled([...this.locks.values()]);
  }

  // ---- internals ----------------------------------------------------------------------------------

  private health(stack: string, svc: string, c: Container): Health {
    if (!c.running) return 'stopped';
    const spec = this.targets.get(stack)?.spec.svc[svc];
    const sick = spec !== undefined && c.hash === serviceHash(spec) && this.behaviour(spec) === 'unhealthy';
    return sick || this.unhealthy.has(`${stack}/${svc}`) ? 'unhealthy' : 'healthy';
  }

  private behaviour(svc: Service): ImageBehaviour {
    return this.opts.image?.(svc) ?? 'ok';
  }

  /** Every service of `target` has a container with its hash (running, when asked); nothing extra. */
  private matches(target: DesiredStack, running: boolean): boolean {
    const svcs = this.stacks.get(target.name);
    if (!svcs) return false;
    const want = Object.entries(target.spec.svc);
    if (svcs.size !== want.length) return false;
    return want.every(([n, sv]) => {
      const c = svcs.get(n);
      return c !== undefined && (!running || c.running) && c.hash === serviceHash(sv);
    });
  }

  /** Serialises work on one stack (apply, remove, restart and the reconciler). */
  private locked<T>(stack: string, fn: () => Promise<T>): Promise<T> {
    const before = this.locks.get(stack) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(stack, tail);
    void tail.then(() => {
      if (this.locks.get(stack) === tail) this.locks.delete(stack);
    });
    return run;
  }

  /** Creates/starts what is missing or different, removes what is extra. Returns true if it changed anything. */
  private converge(target: DesiredStack, faults: boolean): boolean {
    let svcs = this.stacks.get(target.name);
    if (!svcs) {
      svcs = new Map();
      this.stacks.set(target.name, svcs);
    }
    let changed = false;
    for (const [n, c] of [...svcs]) {
      if (!(n in target.spec.svc)) {
        svcs.delete(n);
        this.record('remove', target.name, n, c);
        changed = true;
      }
    }
    for (const [n, s] of Object.entries(target.spec.svc)) {
      const hash = serviceHash(s);
      let c = svcs.get(n);
      // A container's identity is its spec hash: a revision that leaves a service unchanged keeps it.
      if (c && c.hash !== hash) {
        svcs.delete(n);
        this.record('remove', target.name, n, c);
        c = undefined;
      }
      if (!c) {
        c = { rev: target.rev, hash, running: false, startedAt: 0, restarts: 0 };
        svcs.set(n, c);
        this.record('create', target.name, n, c);
        changed = true;
        if (faults) faultPoint('runtime.memory.mid-apply');
      }
      if (!c.running) {
        c.running = true;
        c.startedAt = this.clock.now();
        this.record('start', target.name, n, c);
        changed = true;
      }
    }
    this.targets.set(target.name, target);
    return changed;
  }

  private removeStack(stack: string, volumes: boolean): void {
    const svcs = this.stacks.get(stack);
    for (const [n, c] of svcs ?? []) this.record('remove', stack, n, c);
    this.stacks.delete(stack);
    this.targets.delete(stack);
    if (volumes) this.record('volumes-removed', stack, '', { rev: 0, hash: '' });
  }

  private record(op: EffectOp, stack: string, svc: string, c: Pick<Container, 'rev' | 'hash'>): void {
    const e: Effect = { op, stack, svc, rev: c.rev, hash: c.hash, at: this.clock.now() };
    this.effects.push(e);
    if (this.effects.length > 10_000) this.effects.splice(0, this.effects.length - 10_000);
    if (this.opts.effectLog) appendFileSync(this.opts.effectLog, `${JSON.stringify(e)}\n`);
  }

  private restore(mode: 'running' | 'stopped'): void {
    for (const e of readEffectLog(this.opts.effectLog!)) {
      let svcs = this.stacks.get(e.stack);
      switch (e.op) {
        case 'create':
          if (!svcs) {
            svcs = new Map();
            this.stacks.set(e.stack, svcs);
          }
          svcs.set(e.svc, { rev: e.rev, hash: e.hash, running: false, startedAt: 0, restarts: 0 });
          break;
        case 'start':
        case 'restart': {
          const c = svcs?.get(e.svc);
          if (c) {
            c.running = true;
            c.startedAt = e.at;
          }
          break;
        }
        case 'crash':
        case 'stop': {
          const c = svcs?.get(e.svc);
          if (c) c.running = false;
          break;
        }
        case 'remove':
          svcs?.delete(e.svc);
          if (svcs?.size === 0) this.stacks.delete(e.stack);
          break;
        case 'volumes-removed':
          break;
      }
    }
    if (mode === 'stopped')
      for (const svcs of this.stacks.values()) for (const c of svcs.values()) c.running = false;
  }
}

export function readEffectLog(path: string): Effect[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Effect];
      } catch {
        return []; // a line torn by a kill
      }
    });
}

function aggregate(hs: readonly Health[]): Health {
  if (hs.length === 0) return 'unknown';
  for (const h of ['unhealthy', 'stopped', 'starting', 'unknown'] as const) if (hs.includes(h)) return h;
  return 'healthy';
}

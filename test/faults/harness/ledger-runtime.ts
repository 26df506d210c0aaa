/**
 * The fault suite's runtime: MemoryRuntime's containers and effect log (the site's ledger, JSON lines
 * appended synchronously, so it survives SIGKILL of the agent) with DockerRuntime's reconciler
 * semantics (agent/src/runtime/types.ts, startReconciler):
 *
 * - every operation on a stack (the executor's apply/remove/restart and the reconciler's pass) runs
 *   under one per-stack lock, and a pass reads its target only once it holds the lock;
 * - until `desired()` agrees, the outcome of the last apply/remove this runtime ran for a stack wins
 *   (the target after `applied`, `previous` after a rollback or a failure, nothing after remove).
 *
 * MemoryRuntime's own reconciler reads desired() once per pass and converges after awaiting each
 * stack's lock, which reverts an apply that ran meanwhile (test/faults/memory-runtime-stale-pass.test.ts);
 * with this wrapper the soak judges the agent core, as it would run on Docker. Set
 * OUTPOST_FAULTS_RUNTIME=memory (harness/agent-main.ts) to run the bare MemoryRuntime instead.
 *
 * The reconciler converges through `MemoryRuntime.apply` (idempotent: only missing or different
 * containers are touched), so drift and crashed services are reverted exactly as before.
 */
import type { MemoryRuntime } from '../../../agent/src/runtime/memory.js';
import type {
  ApplyOutcome,
  DesiredStack,
  HealthGate,
  StackRuntime,
} from '../../../agent/src/runtime/types.js';
import type { StackState } from '../../../protocol/src/index.js';

const GATE: HealthGate = { deadlineMs: 1_000, runningForMs: 0 };

export class LedgerRuntime implements StackRuntime {
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Last apply/remove outcome per stack: a target, or null after remove. */
  private readonly outcomes = new Map<string, DesiredStack | null>();
  private desired: (() => readonly DesiredStack[]) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly inner: MemoryRuntime,
    private readonly intervalMs = 500,
  ) {}

  snapshot(): Promise<StackState[]> {
    return this.inner.snapshot();
  }

  apply(target: DesiredStack, previous: DesiredStack | undefined, gate: HealthGate): Promise<ApplyOutcome> {
    return this.locked(target.name, async () => {
      const out = await this.inner.apply(target, previous, gate);
      if (out.status === 'applied') this.outcomes.set(target.name, target);
      else this.outcomes.set(target.name, previous ?? null);
      return out;
    });
  }

  inEffect(target: DesiredStack): Promise<boolean> {
    return this.inner.inEffect(target);
  }

  remove(stack: string, opts: { volumes: boolean }): Promise<void> {
    return this.locked(stack, async () => {
      await this.inner.remove(stack, opts);
      this.outcomes.set(stack, null);
    });
  }

  restart(stack: string, services: readonly string[], notBeforeMs: number): Promise<void> {
    return this.locked(stack, () => this.inner.restart(stack, services, notBeforeMs));
  }

  async startReconciler(
    desired: () => readonly DesiredStack[],
    onChange: (stacks: StackState[]) => void,
  ): Promise<void> {
    this.desired = desired;
    const pass = async () => {
      let changed = false;
      for (const name of this.names()) {
        if (this.closed) return;
        changed = (await this.locked(name, () => this.converge(name))) || changed;
      }
      if (changed && !this.closed) onChange(await this.inner.snapshot());
    };
    await pass();
    const tick = () => {
      this.timer = setTimeout(() => {
        pass().then(tick, tick);
      }, this.intervalMs);
      this.timer.unref();
    };
    if (!this.closed) tick();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.allSettled([...this.locks.values()]);
    await this.inner.close();
  }

  /** Stacks with a desired state or a recorded outcome. */
  private names(): string[] {
    const names = new Set(this.outcomes.keys());
    for (const d of this.desired?.() ?? []) names.add(d.name);
    return [...names].sort();
  }

  /** What a pass converges `stack` to, read under its lock (DockerRuntime's targetFor). */
  private targetFor(stack: string): DesiredStack | undefined {
    const d = this.desired?.().find((x) => x.name === stack);
    const o = this.outcomes.get(stack);
    if (o === undefined) return d;
    if (o === null ? d === undefined : d !== undefined && d.rev === o.rev && d.digest === o.digest) {
      this.outcomes.delete(stack);
      return d;
    }
    return o ?? undefined;
  }

  /** Converges one stack (under its lock); true when an effect was recorded. */
  private async converge(stack: string): Promise<boolean> {
    if (this.closed) return false;
    const target = this.targetFor(stack);
    if (!target) return false; // unknown or removed: left alone (I7)
    const before = this.inner.effects.at(-1);
    await this.inner.apply(target, undefined, GATE);
    return this.inner.effects.at(-1) !== before;
  }

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
}

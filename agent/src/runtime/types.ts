/**
 * The contract between the agent's core (journal, sequencing, transport) and its container runtime.
 *
 * Two implementations: `DockerRuntime` (dockerode against a real Docker or Podman socket: planner +
 * executors, reconciliation loop, health gate with local rollback) and `MemoryRuntime` (an in-memory
 * runtime for the fleet simulator and the core's unit tests: same semantics, no containers).
 * Both must pass the same conformance suite (test/agent/runtime-conformance.ts).
 */
import type { Health, ReasonCode, StackSpec, StackState } from '../../../protocol/src/index.js';

/** Docker labels that identify what Outpost manages (SPEC [RT-1]). */
export const LABELS = {
  managed: 'io.outpost.managed',
  site: 'io.outpost.site',
  stack: 'io.outpost.stack',
  service: 'io.outpost.service',
  rev: 'io.outpost.rev',
  /** sha256 (hex) of the canonical service spec: drift is a container whose hash differs. */
  hash: 'io.outpost.hash',
} as const;

/** One stack as the agent wants it to be. */
export interface DesiredStack {
  readonly name: string;
  readonly rev: number;
  readonly spec: StackSpec;
  /** Spec digest (sha256 of the spec bytes as carried in the command), hex. */
  readonly digest: string;
  /**
   * Set by the core when the spec is critical (privileged, host mounts, host network: DESIGN §5) and
   * carries enough valid approvals ([SEC-CRIT]). Runtimes refuse critical specs without it (`policy`).
   */
  readonly approvedCritical?: boolean;
}

/** Site runtime policy (DESIGN §5). Runtimes check it before touching anything. */
export interface RuntimePolicy {
  /** Allow images referenced by tag instead of digest (development and test sites). Default false. */
  readonly allowTags: boolean;
}

export interface HealthGate {
  /** The stack must be healthy within this long after apply, or it is rolled back. */
  readonly deadlineMs: number;
  /** Services without a healthcheck count as healthy after running this long without restarting. */
  readonly runningForMs: number;
}

export type ApplyOutcome =
  | { readonly status: 'applied' }
  | {
      readonly status: 'rolled-back';
      readonly reason: ReasonCode;
      readonly detail: string;
      /** Revision restored (the previous one), 0 when there was none and the stack was removed. */
      readonly restoredRev: number;
    }
  | { readonly status: 'failed'; readonly reason: ReasonCode; readonly detail: string };

export interface StackRuntime {
  /** What runs now, per managed stack (from labels), with service health. */
  snapshot(): Promise<StackState[]>;
  /**
   * Converges `target` (idempotent: only missing or different containers are touched, so resuming an
   * interrupted apply completes it rather than repeating it — I2). Then applies the health gate; on
   * failure restores `previous` (or removes the stack when there is none) and reports `rolled-back`.
   */
  apply(target: DesiredStack, previous: DesiredStack | undefined, gate: HealthGate): Promise<ApplyOutcome>;
  /** True when every service of `target` runs at target's revision and hash. */
  inEffect(target: DesiredStack): Promise<boolean>;
  /** Removes the stack's containers (and its named volumes when `volumes`). Idempotent. */
  remove(stack: string, opts: { volumes: boolean }): Promise<void>;
  /**
   * Restarts the stack's services (all when `services` is empty). Containers started at or after
   * `notBeforeMs` are skipped, so a restart resumed after a crash does not restart twice (I2).
   */
  restart(stack: string, services: readonly string[], notBeforeMs: number): Promise<void>;
  /**
   * Starts reconciliation (runtime events plus a period): restarts crashed services and reverts drift
   * towards `desired()`; never touches stacks that are not in `desired()` unless they carry our labels
   * and are absent from it (then they are left alone and reported, never deleted on a guess).
   *
   * DockerRuntime: until `desired()` agrees with it, the outcome of the last apply/remove the runtime
   * ran for a stack wins (the target after `applied`; `previous` after a rollback or a failure that
   * had touched containers; nothing after remove), so a core that updates `desired()` after apply
   * returns is never fought, and a revision just rolled back is never re-deployed without its gate.
   */
  startReconciler(
    desired: () => readonly DesiredStack[],
    onChange: (stacks: StackState[]) => void,
  ): Promise<void>;
  close(): Promise<void>;
}

export type { Health };

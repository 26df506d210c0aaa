/**
 * Executes journalled stack commands against the runtime (I2, I7):
 *   journal `executing` (with the desired-stack change, one transaction) -> runtime -> journal
 *   `done`/`failed` + ack `applied`/`failed`/`rolled-back` (one transaction).
 * After a crash an `executing` entry is resumed, never blindly re-run: apply and remove are
 * declarative and idempotent (the runtime only completes missing steps), restart skips containers
 * started since the entry's `started_at`.
 */
import type { Logger } from 'pino';
import {
  COMMAND_BODIES,
  COMMAND_LIMITS,
  type Command,
  CommandHeaderSchema,
  check,
  criticalReasons,
  decode,
  decodeSpec,
  parseSign1,
  type ReasonCode,
  sha256,
  toHex,
} from '../../../protocol/src/index.js';
import type { ApplyOutcome, DesiredStack, HealthGate, StackRuntime } from '../runtime/types.js';
import type { Alarms } from './alarms.js';
import type { DeferralGate } from './deferral.js';
import { faultPoint } from './fault.js';
import type { AgentStore, DesiredRow, JournalRow } from './store.js';
import type { Uplink } from './uplink.js';

/** Reads a command back from the journal (it was verified when it was received). */
export function readJournalled(envelope: Uint8Array): Command {
  const parts = parseSign1(envelope, COMMAND_LIMITS);
  const cmd = check(CommandHeaderSchema, decode(parts.payload, COMMAND_LIMITS), 'command') as Command;
  check(COMMAND_BODIES[cmd.type], cmd.body, cmd.type);
  return cmd;
}

/**
 * A desired-stack row as the runtime's DesiredStack (current, or its previous revision). Only specs
 * that passed the approval check at intake ever reach this table, so a critical one is approved.
 */
export function toDesired(
  row: DesiredRow,
  which: 'current' | 'previous' = 'current',
): DesiredStack | undefined {
  if (which === 'current') {
    const spec = decodeSpec(row.spec, row.z === 1);
    return { name: row.name, rev: row.rev, spec, digest: row.digest, approvedCritical: row.critical === 1 };
  }
  if (row.prev_rev === null || row.prev_spec === null || row.prev_digest === null) return undefined;
  const spec = decodeSpec(row.prev_spec, row.prev_z === 1);
  return {
    name: row.name,
    rev: row.prev_rev,
    spec,
    digest: row.prev_digest,
    approvedCritical: criticalReasons(spec).length > 0,
  };
}

export interface ExecutorHooks {
  /** The desired stacks changed (reconciler input). */
  desiredChanged(): void;
  /** A command finished (any outcome). */
  finished(stack: string): void;
}

/** What `run` did: finished (any outcome), or deferred ([MW-4]): look again after `retryMs`. */
export type RunResult = { readonly deferred: false } | { readonly deferred: true; readonly retryMs: number };

export class Executor {
  /** Stacks with a command executing in this process: the reconciler leaves them to it. */
  readonly busy = new Set<string>();

  constructor(
    private readonly store: AgentStore,
    private readonly runtime: StackRuntime,
    private readonly uplink: Uplink,
    private readonly alarms: Alarms,
    private readonly gate: HealthGate,
    private readonly hooks: ExecutorHooks,
    private readonly nowMs: () => number,
    private readonly log: Logger,
    /** Maintenance windows and update locks ([MW-4]); none: nothing is ever deferred. */
    private readonly deferral?: DeferralGate,
  ) {}

  /** Marks a pending (or deferred) command superseded by a newer one for the same stack (I4, [ORD-5]). */
  supersede(seq: number, by: number): void {
    const row = this.store.journalBySeq(seq);
    if (row?.status !== 'received' && row?.status !== 'deferred') return;
    const msg = `superseded by seq ${by}`;
    this.store.tx(() => {
      this.store.finish(seq, 'superseded', 'superseded', this.nowMs(), undefined, msg);
      if (row.status === 'deferred') this.alarms.clear('deferred', row.stack ?? '');
      this.uplink.ack({ ...this.ackBase(row), st: 'superseded', msg });
    });
    this.log.info({ seq, by, stack: row.stack, rev: row.rev }, 'command superseded');
    this.hooks.finished(row.stack ?? '');
  }

  /**
   * Defers a command whose window is closed or whose stack is locked ([MW-4]): journal `deferred`,
   * alarm `deferred`, ack `deferred` with the reason — only when the reason changes, never per poll.
   * An `executing` entry (resumed after a crash) is never deferred: it has started.
   */
  private maybeDefer(row: JournalRow): RunResult {
    if (!this.deferral || row.status === 'executing') return { deferred: false };
    let d: ReturnType<DeferralGate['check']>;
    try {
      d = this.deferral.check(readJournalled(row.envelope));
    } catch {
      return { deferred: false }; // run() reports an unreadable entry
    }
    if (!d) return { deferred: false };
    if (row.status !== 'deferred' || row.rc !== d.rc) {
      const stack = row.stack ?? '';
      this.store.tx(() => {
        this.store.defer(row.seq, d.rc, d.msg);
        this.alarms.raise('deferred', `${row.type} seq ${row.seq}: ${d.rc}: ${d.msg}`, stack);
        this.uplink.ack({ ...this.ackBase(row), st: 'deferred', rc: d.rc, msg: d.msg });
      });
      this.log.info(
        { seq: row.seq, type: row.type, stack, rev: row.rev, rc: d.rc, msg: d.msg },
        'command deferred',
      );
      this.hooks.finished(stack);
    }
    return { deferred: true, retryMs: d.retryMs };
  }

  /** Runs (or resumes) one journalled stack command, unless it must wait ([MW-4]). Never throws. */
  async run(seq: number): Promise<RunResult> {
    const row = this.store.journalBySeq(seq);
    if (!row || (row.status !== 'received' && row.status !== 'executing' && row.status !== 'deferred'))
      return { deferred: false };
    const wait = this.maybeDefer(row);
    if (wait.deferred) return wait;
    const stack = row.stack ?? '';
    this.busy.add(stack);
    try {
      const cmd = readJournalled(row.envelope);
      const resume = row.status === 'executing';
      if (resume) this.log.warn({ seq, type: cmd.type, stack }, 'resuming command interrupted by a crash');
      switch (cmd.type) {
        case 'stack.apply':
          await this.apply(row, cmd.body, resume);
          break;
        case 'stack.remove':
          await this.remove(row, cmd.body.vols === true, resume);
          break;
        case 'stack.restart':
          await this.restart(row, cmd.body.svc ?? [], resume);
          break;
        default:
          this.record(row, {
            status: 'failed',
            reason: 'internal',
            detail: `${cmd.type} is not stack-bound`,
          });
      }
    } catch (err) {
      this.log.error({ seq, stack, err: (err as Error).message }, 'command execution failed');
      try {
        this.record(row, { status: 'failed', reason: 'internal', detail: (err as Error).message });
      } catch (err2) {
        this.log.error({ seq, err: (err2 as Error).message }, 'cannot record failure');
      }
    } finally {
      this.busy.delete(stack);
      this.hooks.desiredChanged();
      this.hooks.finished(stack);
    }
    return { deferred: false };
  }

  private async apply(
    row: JournalRow,
    body: Extract<Command, { type: 'stack.apply' }>['body'],
    resume: boolean,
  ): Promise<void> {
    const spec = decodeSpec(body.spec, body.z === true);
    const critical = criticalReasons(spec).length > 0;
    const target: DesiredStack = {
      name: body.stack,
      rev: body.rev,
      spec,
      digest: toHex(sha256(body.spec)),
      approvedCritical: critical,
    };
    const cur = this.store.desired(body.stack);
    let previous: DesiredStack | undefined;
    if (resume && cur?.seq === row.seq) {
      previous = toDesired(cur, 'previous');
    } else {
      previous = cur ? toDesired(cur) : undefined;
      const now = this.nowMs();
      this.store.tx(() => {
        if (!resume) this.store.markExecuting(row.seq, now);
        this.store.putDesired({
          name: body.stack,
          rev: body.rev,
          spec: body.spec,
          z: body.z ? 1 : 0,
          digest: target.digest,
          critical: critical ? 1 : 0,
          seq: row.seq,
          prev_rev: cur?.rev ?? null,
          prev_spec: cur?.spec ?? null,
          prev_z: cur?.z ?? null,
          prev_digest: cur?.digest ?? null,
          updated_at: now,
        });
      });
    }
    this.hooks.desiredChanged();
    if (resume && (await this.runtime.inEffect(target).catch(() => false))) {
      this.log.info(
        { seq: row.seq, stack: body.stack, rev: body.rev },
        'interrupted apply already in effect',
      );
    }
    faultPoint('agent.mid-apply');
    const outcome = await this.runtime.apply(target, previous, this.gate).catch(
      (err: unknown): ApplyOutcome => ({
        status: 'failed',
        reason: 'runtime-error',
        detail: (err as Error).message,
      }),
    );
    faultPoint('agent.after-apply-before-record');
    this.record(row, outcome, previous);
  }

  private async remove(row: JournalRow, volumes: boolean, resume: boolean): Promise<void> {
    const stack = row.stack ?? '';
    this.store.tx(() => {
      if (!resume) this.store.markExecuting(row.seq, this.nowMs());
      this.store.deleteDesired(stack);
    });
    this.hooks.desiredChanged();
    faultPoint('agent.mid-apply');
    const outcome = await this.runtime.remove(stack, { volumes }).then(
      (): ApplyOutcome => ({ status: 'applied' }),
      (err: unknown): ApplyOutcome => ({
        status: 'failed',
        reason: 'runtime-error',
        detail: (err as Error).message,
      }),
    );
    faultPoint('agent.after-apply-before-record');
    this.record(row, outcome);
  }

  private async restart(row: JournalRow, services: readonly string[], resume: boolean): Promise<void> {
    const stack = row.stack ?? '';
    if (!this.store.desired(stack)) {
      // I7: never act on an unknown target.
      this.record(row, {
        status: 'failed',
        reason: 'unknown-stack',
        detail: `stack ${stack} is not deployed`,
      });
      return;
    }
    const startedAt = resume && row.started_at !== null ? row.started_at : this.nowMs();
    if (!resume) this.store.markExecuting(row.seq, startedAt);
    faultPoint('agent.mid-apply');
    const outcome = await this.runtime.restart(stack, services, startedAt).then(
      (): ApplyOutcome => ({ status: 'applied' }),
      (err: unknown): ApplyOutcome => ({
        status: 'failed',
        reason: (err as { code?: unknown }).code === 'unknown-stack' ? 'unknown-stack' : 'runtime-error',
        detail: (err as Error).message,
      }),
    );
    faultPoint('agent.after-apply-before-record');
    this.record(row, outcome);
  }

  private ackBase(row: JournalRow) {
    return {
      seq: row.seq,
      id: row.id,
      type: row.type,
      ...(row.stack ? { stack: row.stack } : {}),
      ...(row.rev ? { rev: row.rev } : {}),
    };
  }

  /** Journals the outcome, restores the desired stack after a failure, raises/clears alarms, acks. */
  private record(row: JournalRow, outcome: ApplyOutcome, previous?: DesiredStack): void {
    const stack = row.stack ?? '';
    const now = this.nowMs();
    const isApply = row.type === 'stack.apply';
    this.store.tx(() => {
      // The command ran: whatever deferred it is over ([MW-4]).
      this.alarms.clear('deferred', stack);
      if (outcome.status === 'applied') {
        this.store.finish(row.seq, 'done', 'applied', now);
        this.alarms.clear('apply-failed', stack);
        if (isApply || row.type === 'stack.remove') this.alarms.clear('rolled-back', stack);
        this.uplink.ack({ ...this.ackBase(row), st: 'applied' });
        return;
      }
      const reason: ReasonCode = outcome.reason;
      const detail =
        outcome.status === 'rolled-back'
          ? `${outcome.detail}; restored rev ${outcome.restoredRev}`
          : outcome.detail;
      this.store.finish(row.seq, 'failed', outcome.status, now, reason, detail);
      if (isApply) this.restoreDesired(stack, row.seq, previous, now);
      if (outcome.status === 'rolled-back')
        this.alarms.raise('rolled-back', `rev ${row.rev}: ${detail}`, stack);
      else this.alarms.raise('apply-failed', `${row.type} seq ${row.seq}: ${reason}: ${detail}`, stack);
      this.uplink.ack({ ...this.ackBase(row), st: outcome.status, rc: reason, msg: detail });
    });
    this.log.info(
      { seq: row.seq, type: row.type, stack, rev: row.rev, outcome: outcome.status },
      'command finished',
    );
  }

  /** After a failed or rolled-back apply the site keeps converging to what it had (I7). */
  private restoreDesired(stack: string, seq: number, previous: DesiredStack | undefined, now: number): void {
    const cur = this.store.desired(stack);
    if (!cur || cur.seq !== seq) return;
    if (!previous || cur.prev_spec === null || cur.prev_rev === null || cur.prev_digest === null) {
      this.store.deleteDesired(stack);
      return;
    }
    this.store.putDesired({
      name: stack,
      rev: cur.prev_rev,
      spec: cur.prev_spec,
      z: cur.prev_z ?? 0,
      digest: cur.prev_digest,
      critical: criticalReasons(previous.spec).length > 0 ? 1 : 0,
      seq,
      prev_rev: null,
      prev_spec: null,
      prev_z: null,
      prev_digest: null,
      updated_at: now,
    });
  }
}

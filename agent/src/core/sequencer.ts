/**
 * Ordering (I3, I4; SPEC [ORD-1]..[ORD-5]).
 *
 * - `contig` is the highest seq up to which the chain of `prev` links has been received. A journalled
 *   command is ready when its `prev` <= contig; the watermark then moves to it, and every command at
 *   or below it is dispatched in seq order. Seqs at or below `contig` are replays (journal.ts).
 * - Gap policy ([ORD-3]): while a journalled command waits for a missing `prev`, a timer runs; after
 *   `gapHoldMs` the gap is reported (`seq-gap` alarm, log) and passed: `contig` jumps to the waiting
 *   command's `prev`, so it and its successors proceed. A late arrival of a missing seq is then at or
 *   below `contig`, hence a replay. The alarm is cleared by a later heartbeat whose `last` shows the
 *   agent has everything the controller published.
 * - Per-stack queues: stack commands wait in their stack's queue and run one at a time per stack;
 *   different stacks run concurrently, so a slow or failing stack never blocks another. A newer
 *   stack.apply or stack.remove supersedes the older pending (not yet executing) commands of its stack
 *   (acked `superseded`, I4). Execution starts once intake has been quiet for `settleMs`, so a burst
 *   redelivered on reconnect collapses to its newest revision.
 * - `applied` is the highest seq at or below `contig` with nothing unfinished at or below it (state
 *   `last`, status `lastSeq`).
 */
import type { Logger } from 'pino';
import type { Alarms } from './alarms.js';
import type { Executor } from './executor.js';
import { STACK_TYPES } from './journal.js';
import { type AgentStore, META } from './store.js';

export interface SequencerOptions {
  readonly gapHoldMs: number;
  readonly settleMs: number;
  readonly journalKeep: number;
}

interface Entry {
  readonly seq: number;
  readonly type: string;
  readonly executing: boolean;
}

export class Sequencer {
  private contig: number;
  private applied: number;
  private readonly queues = new Map<string, Entry[]>();
  private readonly workers = new Map<string, Promise<void>>();
  /** Wakes a stack's worker waiting on a deferred command (new command for the stack, close). */
  private readonly wakers = new Map<string, () => void>();
  private gapTimer: NodeJS.Timeout | undefined;
  private lastIntakeAt = Number.NEGATIVE_INFINITY;
  private heartbeatLast = 0;
  private closed = false;
  private finishedSincePrune = 0;
  /** Called when `applied` moves or a command finishes. */
  onProgress: () => void = () => {};

  constructor(
    private readonly store: AgentStore,
    private readonly executor: Executor,
    private readonly alarms: Alarms,
    private readonly opts: SequencerOptions,
    /** Monotonic milliseconds (settle timing only). */
    private readonly nowMs: () => number,
    private readonly log: Logger,
  ) {
    this.contig = store.metaInt(META.contig);
    this.applied = store.metaInt(META.applied);
  }

  get watermark(): { contig: number; applied: number } {
    return { contig: this.contig, applied: this.applied };
  }

  /** Queue depth per stack (pending, including the one executing). */
  depths(): Record<string, number> {
    return Object.fromEntries([...this.queues].map(([k, q]) => [k, q.length]));
  }

  /** Re-queues what the journal left open (executing entries first: they resume, never re-run). */
  start(): void {
    for (const row of this.store.openJournal()) {
      if (row.seq <= this.contig) this.dispatch(row.seq, row.type, row.stack, row.status === 'executing');
    }
    this.advance();
  }

  /** After intake journalled a new row. */
  journalled(): void {
    this.lastIntakeAt = this.nowMs();
    this.advance();
  }

  heartbeat(last: number): void {
    this.heartbeatLast = Math.max(this.heartbeatLast, last);
    this.maybeClearGapAlarm();
  }

  /** Re-checks the watermark after a command finished. */
  finished(): void {
    this.updateApplied();
    this.onProgress();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of [...this.wakers.values()]) wake();
    if (this.gapTimer) clearTimeout(this.gapTimer);
    this.gapTimer = undefined;
    await Promise.allSettled([...this.workers.values()]);
  }

  private advance(): void {
    const from = this.contig;
    for (;;) {
      const next = this.store.journalAbove(this.contig).find((r) => r.prev <= this.contig);
      if (!next) break;
      this.contig = next.seq;
    }
    if (this.contig !== from) {
      // Progress: a further gap gets its own full hold time.
      if (this.gapTimer) clearTimeout(this.gapTimer);
      this.gapTimer = undefined;
      this.store.setMeta(META.contig, this.contig);
      for (const row of this.store.journalAbove(from)) {
        if (row.seq > this.contig) break;
        if (row.status === 'received') {
          const full = this.store.journalBySeq(row.seq);
          if (full) this.dispatch(full.seq, full.type, full.stack, false);
        }
      }
    }
    this.checkGap();
    this.updateApplied();
    this.maybeClearGapAlarm();
  }

  private checkGap(): void {
    const held = this.store.journalAbove(this.contig);
    if (held.length === 0) {
      if (this.gapTimer) clearTimeout(this.gapTimer);
      this.gapTimer = undefined;
      return;
    }
    if (this.gapTimer || this.closed) return;
    const first = held[0]!;
    this.log.info({ contig: this.contig, waiting: first.seq, prev: first.prev }, 'seq gap: holding');
    this.gapTimer = setTimeout(() => {
      this.gapTimer = undefined;
      this.passGap();
    }, this.opts.gapHoldMs);
    this.gapTimer.unref();
  }

  private passGap(): void {
    if (this.closed) return;
    const first = this.store.journalAbove(this.contig)[0];
    if (!first) return;
    const missing = first.prev === this.contig + 1 ? `${first.prev}` : `${this.contig + 1}..${first.prev}`;
    const msg = `seq ${missing} missing after ${this.opts.gapHoldMs} ms; proceeding from ${first.seq}`;
    this.log.warn({ contig: this.contig, missingTo: first.prev, next: first.seq }, 'seq gap passed');
    this.store.tx(() => {
      this.alarms.raise('seq-gap', msg);
      this.contig = first.prev;
      this.store.setMeta(META.contig, this.contig);
    });
    this.advance();
  }

  private maybeClearGapAlarm(): void {
    if (this.heartbeatLast > 0 && this.contig >= this.heartbeatLast && !this.gapTimer) {
      this.alarms.clear('seq-gap');
    }
  }

  private dispatch(seq: number, type: string, stack: string | null, executing: boolean): void {
    if (!STACK_TYPES.has(type) || stack === null) return;
    let q = this.queues.get(stack);
    if (!q) {
      q = [];
      this.queues.set(stack, q);
    }
    if (q.some((e) => e.seq === seq)) return;
    if (type === 'stack.apply' || type === 'stack.remove') {
      // I4: the newest desired state wins over older pending commands of the same stack.
      for (const e of q.filter((x) => !x.executing && x.seq < seq)) {
        q.splice(q.indexOf(e), 1);
        this.executor.supersede(e.seq, seq);
      }
    }
    q.push({ seq, type, executing });
    q.sort((a, b) => (a.executing === b.executing ? a.seq - b.seq : a.executing ? -1 : 1));
    if (!this.workers.has(stack)) {
      const w = this.work(stack).finally(() => this.workers.delete(stack));
      this.workers.set(stack, w);
    } else this.wakers.get(stack)?.();
  }

  /**
   * One worker per stack: runs its queue in order, after intake has settled. A deferred head
   * ([MW-4]) goes back to pending (so a newer revision can supersede it, I4) and the worker waits
   * for its retry time or a new command for the stack; other stacks' workers are not affected.
   */
  private async work(stack: string): Promise<void> {
    const q = this.queues.get(stack)!;
    while (q.length > 0 && !this.closed) {
      if (!q[0]!.executing) await this.settle();
      if (this.closed) break;
      const head = q[0];
      if (!head) break;
      // Marked executing in memory so a newer command cannot supersede it while it runs.
      q[0] = { ...head, executing: true };
      const r = await this.executor.run(head.seq);
      if (r.deferred) {
        const i = q.findIndex((e) => e.seq === head.seq);
        if (i >= 0) q[i] = { ...head, executing: false };
        // A newer apply/remove that arrived while it was being judged supersedes it now.
        const newer = q.find(
          (e) => e.seq > head.seq && (e.type === 'stack.apply' || e.type === 'stack.remove'),
        );
        if (newer && i >= 0) {
          q.splice(i, 1);
          this.executor.supersede(head.seq, newer.seq);
          this.finished();
          continue;
        }
        await this.sleep(stack, r.retryMs);
        continue;
      }
      q.shift();
      this.finished();
    }
    if (q.length === 0) this.queues.delete(stack);
  }

  private sleep(stack: string, ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wakers.get(stack) === done) this.wakers.delete(stack);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.set(stack, done);
    });
  }

  private async settle(): Promise<void> {
    for (;;) {
      const wait = this.lastIntakeAt + this.opts.settleMs - this.nowMs();
      if (wait <= 0 || this.closed) return;
      await new Promise<void>((r) => setTimeout(r, Math.min(wait, this.opts.settleMs)));
    }
  }

  private updateApplied(): void {
    const minOpen = this.store.minOpenSeq();
    const applied = minOpen === undefined ? this.contig : Math.min(this.contig, minOpen - 1);
    if (applied === this.applied) return;
    this.applied = applied;
    this.store.setMeta(META.applied, applied);
    if (++this.finishedSincePrune >= 64) {
      this.finishedSincePrune = 0;
      const n = this.store.pruneJournal(applied, this.opts.journalKeep);
      if (n > 0) this.log.debug({ pruned: n }, 'journal pruned');
    }
  }
}

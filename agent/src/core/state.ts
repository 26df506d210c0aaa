/**
 * State reporting ([PAY-STATE]): a full snapshot on connect, on `state.request` and whenever the
 * outbox had to evict deltas; otherwise deltas of the stacks that changed (plus `gone`), throttled to
 * one per `minIntervalMs`. Each state lists every active alarm, the applied watermark, the trust
 * version and the outbox drop count. The same view feeds the SCADA status (status.ts).
 *
 * The view merges what the agent wants (desired stacks: `want`) with what the runtime reports
 * (`rev`, health, services). A stack the runtime runs but the agent does not want shows `want: 0`.
 *
 * A delta is written when stacks, alarms, the trust version or the applied watermark `last` changed,
 * except that `last` moving only because heartbeats were applied is no change of its own ([HB-2]): the
 * heartbeat's signed ack already tells the controller that seq was applied, so an idle site answers a
 * heartbeat with its ack alone, and the next delta or snapshot carries the current `last`.
 */
import type { Logger } from 'pino';
import type { StackState } from '../../../protocol/src/index.js';
import type { StackRuntime } from '../runtime/types.js';
import type { Alarms } from './alarms.js';
import type { Outbox } from './outbox.js';
import type { AgentStore } from './store.js';
import type { Uplink } from './uplink.js';

export interface StateSources {
  readonly store: AgentStore;
  readonly runtime: StackRuntime;
  readonly alarms: Alarms;
  readonly outbox: Outbox;
  readonly uplink: Uplink;
  readonly trustVersion: () => number;
  readonly applied: () => number;
  readonly agentVersion: string;
}

export class StateReporter {
  private reported = new Map<string, string>();
  private reportedAlarms = '';
  private reportedLast = -1;
  /** `reportedLast` carried forward over watermark moves that were heartbeats only. */
  private quietLast = -1;
  private reportedTrust = -1;
  private fullPending = false;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private lastDeltaAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  private view: StackState[] = [];
  /** Called after each flush with the merged view (status.ts publishes it). */
  onView: (stacks: readonly StackState[]) => void = () => {};

  constructor(
    private readonly src: StateSources,
    private readonly minIntervalMs: number,
    /** Monotonic milliseconds (throttle only). */
    private readonly nowMs: () => number,
    private readonly log: Logger,
  ) {}

  /** The latest merged view (desired + runtime). */
  get stacks(): readonly StackState[] {
    return this.view;
  }

  requestFull(): void {
    this.fullPending = true;
    this.schedule(0);
  }

  /**
   * The applied watermark moved from `before` to `after` by applying a heartbeat alone: not a change
   * to report by itself ([HB-2]).
   */
  heartbeatApplied(before: number, after: number): void {
    if (before === this.quietLast) this.quietLast = after;
  }

  changed(): void {
    this.dirty = true;
    this.schedule(Math.max(0, this.lastDeltaAt + this.minIntervalMs - this.nowMs()));
  }

  /** Resolves once pending work has been written to the outbox (tests, shutdown). */
  async settle(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      await this.flush();
    }
    await this.flushing;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(delayMs: number): void {
    if (this.closed) return;
    if (this.timer) {
      if (delayMs > 0) return;
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delayMs);
  }

  /** Builds the merged view from the runtime and the desired stacks. */
  async buildView(): Promise<StackState[]> {
    let running: StackState[] = [];
    try {
      running = await this.src.runtime.snapshot();
      this.src.alarms.clear('runtime-unreachable');
    } catch (err) {
      this.src.alarms.raise('runtime-unreachable', (err as Error).message);
    }
    const desired = new Map(this.src.store.desiredAll().map((d) => [d.name, d.rev]));
    const out: StackState[] = [];
    const seen = new Set<string>();
    for (const s of running) {
      seen.add(s.name);
      out.push({ ...s, want: desired.get(s.name) ?? 0 });
    }
    for (const [name, rev] of desired) {
      if (!seen.has(name)) out.push({ name, rev: 0, want: rev, h: 'unknown', svc: [] });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).slice(0, 256);
  }

  private flush(): Promise<void> {
    const run = async () => {
      if (this.flushing) await this.flushing;
      if (this.closed) return;
      const full = this.fullPending;
      if (!full && !this.dirty) return;
      this.fullPending = false;
      this.dirty = false;
      try {
        const stacks = await this.buildView();
        this.view = stacks;
        this.write(stacks, full);
        this.onView(stacks);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'state report failed');
        if (full) this.fullPending = true;
        else this.dirty = true;
      }
    };
    const p = run().finally(() => {
      if (this.flushing === p) this.flushing = undefined;
    });
    this.flushing = p;
    return p;
  }

  private write(stacks: StackState[], full: boolean): void {
    const alarms = this.src.alarms.list();
    const alarmsJson = JSON.stringify(alarms);
    const now = new Map(stacks.map((s) => [s.name, JSON.stringify(s)]));
    const base = {
      last: this.src.applied(),
      trust: this.src.trustVersion(),
      alarms,
      drops: this.src.outbox.drops(),
      agent: this.src.agentVersion,
    };
    if (full) {
      this.src.store.tx(() => this.src.uplink.state({ ...base, full: true, stacks }));
    } else {
      const changed = stacks.filter((s) => this.reported.get(s.name) !== now.get(s.name));
      const gone = [...this.reported.keys()].filter((n) => !now.has(n));
      const same =
        changed.length === 0 &&
        gone.length === 0 &&
        alarmsJson === this.reportedAlarms &&
        (base.last === this.reportedLast || base.last === this.quietLast) &&
        base.trust === this.reportedTrust;
      if (same) return;
      this.src.store.tx(() =>
        this.src.uplink.state({ ...base, full: false, stacks: changed, ...(gone.length ? { gone } : {}) }),
      );
      this.lastDeltaAt = this.nowMs();
    }
    this.reported = now;
    this.reportedAlarms = alarmsJson;
    this.reportedLast = base.last;
    this.quietLast = base.last;
    this.reportedTrust = base.trust;
    this.src.outbox.kick();
    this.log.debug({ full, stacks: stacks.length }, 'state queued');
  }
}

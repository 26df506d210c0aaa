/**
 * SCADA status ([PAY-STATUS], I10): retained UTF-8 JSON on the site's status topic, with the time it
 * was written (`ts`) so every consumer can compute its age, per-stack desired/running revision and
 * health, alarms, `controlAge` (seconds since the last signed message from the controller) and the
 * applied watermark. The last will marks the site offline (`reason: connection-lost`).
 *
 * It is published on every (re)connection and when what it reports changes: stacks, health, alarms,
 * the agent version or `lastSeq` ([PAY-STATUS], [HB-2]). A change of `lastSeq` that only a heartbeat
 * made (the heartbeat takes its own seq, [OUT-7]) and the passing of `controlAge` are no change of their
 * own: they are folded into the next status published for another reason, so an idle site sends no
 * status when its controller's heartbeat arrives (idle wire budget, DESIGN §7). Every field stays true
 * as of `ts`.
 *
 * The control-plane monitor raises `stale-control-plane` when no verified command (a heartbeat or any
 * other) has arrived for K heartbeat intervals; the site keeps running its last good state, and the
 * alarm clears when one arrives. Both are alarm changes, so both are published.
 */
import type { Logger } from 'pino';
import type { Alarm, SiteStatus, StackState, Topics } from '../../../protocol/src/index.js';
import type { Alarms } from './alarms.js';
import type { Outbox } from './outbox.js';
import { type AgentStore, META } from './store.js';

const iso = (ms: number) => new Date(ms).toISOString();

export interface StatusInput {
  readonly site: string;
  readonly online: boolean;
  readonly nowMs: number;
  readonly agent?: string;
  readonly reason?: string;
  readonly stacks?: readonly StackState[];
  readonly alarms?: readonly Alarm[];
  readonly lastContactMs?: number;
  readonly lastSeq?: number;
}

export function buildSiteStatus(i: StatusInput): SiteStatus {
  const s: SiteStatus = { v: 1, site: i.site, online: i.online, ts: iso(i.nowMs) };
  if (i.agent) s.agent = i.agent;
  if (i.reason) s.reason = i.reason;
  if (i.stacks) {
    s.stacks = Object.fromEntries(
      i.stacks.map((st) => [st.name, { desired: st.want, running: st.rev, health: st.h }]),
    );
  }
  if (i.alarms) {
    s.alarms = i.alarms.map((a) => ({
      code: a.code,
      since: iso(a.since * 1000),
      ...(a.msg ? { msg: a.msg } : {}),
      ...(a.stack ? { stack: a.stack } : {}),
    }));
  }
  if (i.lastContactMs) s.controlAge = Math.max(0, Math.floor((i.nowMs - i.lastContactMs) / 1000));
  if (i.lastSeq !== undefined) s.lastSeq = i.lastSeq;
  return s;
}

export function encodeStatus(s: SiteStatus): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(s));
}

export interface StatusSources {
  readonly site: string;
  readonly agentVersion: string;
  readonly topics: Topics;
  readonly store: AgentStore;
  readonly outbox: Outbox;
  readonly alarms: Alarms;
  readonly stacks: () => readonly StackState[];
  readonly applied: () => number;
  /** Publishes directly (QoS 1, retained) when the outbox cannot be written (disk full). */
  readonly direct: (topic: string, payload: Uint8Array) => void;
}

/** What makes a status worth publishing: everything but `ts`, `controlAge` and `lastSeq`. */
function contentKey(s: SiteStatus): string {
  return JSON.stringify([s.online, s.agent ?? null, s.reason ?? null, s.stacks ?? null, s.alarms ?? null]);
}

export class StatusPublisher {
  private timer: NodeJS.Timeout | undefined;
  private lastAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  /** Content of the last status queued (contentKey); undefined: none yet on this run. */
  private publishedKey: string | undefined;
  /**
   * The `lastSeq` the last status queued stands for: its own, carried forward over watermark moves
   * that were heartbeats only (`heartbeatApplied`).
   */
  private quietSeq = -1;

  constructor(
    private readonly src: StatusSources,
    private readonly minIntervalMs: number,
    private readonly nowMs: () => number,
    private readonly log: Logger,
    /** Monotonic milliseconds for the throttle (wall-clock jumps must not stall it). */
    private readonly mono: () => number = () => performance.now(),
  ) {}

  current(online = true): SiteStatus {
    let lastContactMs = 0;
    try {
      lastContactMs = this.src.store.metaInt(META.lastContact);
    } catch {
      // unreadable database: no control age
    }
    return buildSiteStatus({
      site: this.src.site,
      online,
      nowMs: this.nowMs(),
      agent: this.src.agentVersion,
      stacks: this.src.stacks(),
      alarms: this.src.alarms.list(),
      lastContactMs,
      lastSeq: this.src.applied(),
    });
  }

  /** The last-will payload (offline); its `ts` is the time of the connection it guards. */
  will(): Uint8Array {
    return encodeStatus(
      buildSiteStatus({
        site: this.src.site,
        online: false,
        nowMs: this.nowMs(),
        agent: this.src.agentVersion,
        reason: 'connection-lost',
      }),
    );
  }

  offline(reason: string): Uint8Array {
    return encodeStatus({ ...this.current(false), reason });
  }

  /** Publishes now, whatever the last status said (on connect: the retained message may be the will). */
  publishNow(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.publish(true);
  }

  /**
   * The applied watermark moved from `before` to `after` by applying a heartbeat alone ([HB-2]): not a
   * change to publish by itself; the next status published for another reason carries it.
   */
  heartbeatApplied(before: number, after: number): void {
    if (before === this.quietSeq) this.quietSeq = after;
  }

  /**
   * Something may have changed: publish, at most once per `minIntervalMs`, if the status differs from
   * the last one in more than its time, control age and heartbeat-only `lastSeq` moves.
   */
  changed(): void {
    if (this.timer || this.closed) return;
    const wait = Math.max(0, this.lastAt + this.minIntervalMs - this.mono());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.publish();
    }, wait);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private publish(force = false): void {
    if (this.closed) return;
    const status = this.current(true);
    const key = contentKey(status);
    const seq = status.lastSeq ?? -1;
    if (!force && key === this.publishedKey && seq === this.quietSeq) return;
    this.publishedKey = key;
    this.quietSeq = seq;
    this.lastAt = this.mono();
    const payload = encodeStatus(status);
    const topic = this.src.topics.status(this.src.site);
    try {
      this.src.store.tx(() => this.src.outbox.addStatus(topic, payload));
      this.src.outbox.kick();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'status not queued; publishing directly');
      this.src.direct(topic, payload);
    }
  }
}

export interface ControlPlaneOptions {
  readonly intervalSec: number;
  readonly missed: number;
}

export class ControlPlaneMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly bootMs: number;

  constructor(
    private readonly store: AgentStore,
    private readonly alarms: Alarms,
    private readonly opts: ControlPlaneOptions,
    private readonly nowMs: () => number,
  ) {
    this.bootMs = nowMs();
  }

  start(): void {
    const every = Math.min(60_000, Math.max(100, (this.opts.intervalSec * 1000) / 4));
    this.timer = setInterval(() => this.check(), every);
    this.timer.unref();
    this.check();
  }

  /** Raises or clears `stale-control-plane`. */
  check(): void {
    let last: number;
    try {
      last = this.store.metaInt(META.lastContact) || this.bootMs;
    } catch {
      return;
    }
    const limitMs = this.opts.intervalSec * 1000 * this.opts.missed;
    const age = this.nowMs() - last;
    if (age > limitMs) {
      if (!this.alarms.has('stale-control-plane')) {
        this.alarms.raise(
          'stale-control-plane',
          `no signed message from the controller for ${Math.floor(age / 1000)} s`,
        );
      }
    } else {
      this.alarms.clear('stale-control-plane');
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * SCADA status ([PAY-STATUS], I10): retained UTF-8 JSON on the site's status topic, with the time it
 * was written (`ts`) so every consumer can compute its age, per-stack desired/running revision and
 * health, alarms, `controlAge` (seconds since the last signed message from the controller) and the
 * applied watermark. The last will marks the site offline (`reason: connection-lost`).
 *
 * The control-plane monitor raises `stale-control-plane` when no verified command (a heartbeat or any
 * other) has arrived for K heartbeat intervals; the site keeps running its last good state, and the
 * alarm clears when one arrives.
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

export class StatusPublisher {
  private timer: NodeJS.Timeout | undefined;
  private lastAt = Number.NEGATIVE_INFINITY;
  private closed = false;

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

  /** Publishes now (on connect). */
  publishNow(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.publish();
  }

  /** Something changed: publish, at most once per `minIntervalMs`. */
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

  private publish(): void {
    if (this.closed) return;
    this.lastAt = this.mono();
    const payload = encodeStatus(this.current(true));
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

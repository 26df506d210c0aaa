/**
 * Uplink ingest: `site/+/ack`, `site/+/state` (signed, verified with the site's enrolled uplink key)
 * and `site/+/status` (retained JSON, the agent's last will sets it offline).
 *
 * Verification runs as messages arrive; their effects are committed in batches (one transaction per
 * burst, [OUT-8]). mqtt.js handles inbound packets strictly one after another, so holding each PUBACK
 * until its commit would cost one fsync per ack — milliseconds each on a busy disk, minutes for a
 * 10,000-site rollout. Instead an ack lost to a crash before its batch commits is recovered: a command
 * still `published` is resent ([OUT-5]) and one already `accepted` is polled ([OUT-5]); the agent
 * re-acks a duplicate with its recorded status ([ORD-4]).
 *
 * Forged, unknown-key, malformed or misdirected messages are counted by reason code, logged (site,
 * topic, code; never payloads) and ignored (I9).
 *
 * A site's retained status is published on change only (an idle site's heartbeats are answered by their
 * ack alone, SPEC [HB-2]), so the status a site published before it was enrolled may stay its current
 * one for days: the latest status of each site not (yet) enrolled is kept (at most UNENROLLED_MAX
 * sites, oldest dropped) and recorded when the site is enrolled (`invalidate`).
 */
import type { Logger } from 'pino';
import {
  type Ack,
  check,
  isProtocolError,
  openAck,
  openState,
  parseTopic,
  type SiteStatus,
  SiteStatusSchema,
  type State,
} from '../../protocol/src/index.js';
import type { CommandStatus, CommandSummary } from './store/commands.js';
import { FINAL_STATUSES } from './store/commands.js';
import type { Store } from './store/index.js';
import type { SiteState } from './store/sites.js';

export interface IngestHooks {
  /** Acks moved commands of these sites on (their window may have room). */
  progressed(sites: ReadonlySet<string>): void;
  /** A site's retained status went (back) online. */
  online(site: string): void;
}

const RANK: Record<CommandStatus, number> = {
  pending: 0,
  published: 1,
  accepted: 2,
  deferred: 3,
  applied: 4,
  failed: 4,
  rejected: 4,
  superseded: 4,
  'rolled-back': 4,
  expired: 4,
  cancelled: 4,
};

/** The command status an ack leads to, or undefined when it changes nothing (late or duplicate ack). */
export function nextStatus(current: CommandStatus, ack: Pick<Ack, 'st' | 'rc'>): CommandStatus | undefined {
  const target: CommandStatus = ack.st === 'rejected' && ack.rc === 'expired' ? 'expired' : ack.st;
  if (target === current) return undefined;
  if (RANK[target] > RANK[current]) return target;
  // A health-gated update can fail after it was applied: the agent rolls back locally.
  if (current === 'applied' && (target === 'rolled-back' || target === 'failed')) return target;
  return undefined;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Merges a state message into the current view: a snapshot replaces, a delta updates by stack name. */
export function mergeState(current: SiteState | null, s: State): SiteState {
  const { v: _v, site: _site, gone, ...rest } = s;
  if (s.full || !current) return rest;
  const stacks = new Map(current.stacks.map((st) => [st.name, st]));
  for (const st of s.stacks) stacks.set(st.name, st);
  for (const name of gone ?? []) stacks.delete(name);
  return { ...rest, stacks: [...stacks.values()].sort((a, b) => (a.name < b.name ? -1 : 1)) };
}

/** Effects committed per ingest transaction (see `flush`). */
export const FLUSH_MAX = 500;

/** Sites not (yet) enrolled whose latest status is kept for their enrolment. */
export const UNENROLLED_MAX = 1024;

export class Ingest {
  private readonly keys = new Map<string, Uint8Array | null>();
  /** Latest status per site not enrolled when it arrived (insertion order = arrival order). */
  private readonly unenrolled = new Map<string, SiteStatus>();
  private queue: ((now: number) => void)[] = [];
  private progressedSites = new Set<string>();
  private flushScheduled = false;
  private closed = false;
  private readonly counts = { acks: 0, states: 0, statuses: 0, ignored: {} as Record<string, number> };

  constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly hooks: IngestHooks,
    private readonly log: Logger,
    /** When an accepted (not yet final) command is next polled for its final ack ([OUT-5]). */
    private readonly pollMs: number = 3_600_000,
  ) {}

  /**
   * Forget a cached uplink key (enrolment or key change). A status the site published while it was not
   * enrolled is recorded now: it is the site's current one until the site publishes another.
   */
  invalidate(site: string): void {
    this.keys.delete(site);
    const parked = this.unenrolled.get(site);
    if (parked && this.keyFor(site)) {
      this.unenrolled.delete(site);
      this.enqueue((now) => this.applyStatus(parked, now));
    }
  }

  stats(): { acks: number; states: number; statuses: number; ignored: Record<string, number> } {
    return { ...this.counts, ignored: { ...this.counts.ignored } };
  }

  private keyFor = (site: string): Uint8Array | undefined => {
    let k = this.keys.get(site);
    if (k === undefined) {
      const row = this.store.sites.row(site);
      k = row ? new Uint8Array(row.uplink_pub) : null;
      this.keys.set(site, k);
    }
    return k ?? undefined;
  };

  private ignore(code: string, topic: string, site?: string): undefined {
    this.counts.ignored[code] = (this.counts.ignored[code] ?? 0) + 1;
    this.log.warn({ topic, site, code }, 'uplink message ignored');
  }

  /** Handles one MQTT message. Never throws (I9). */
  handle(topic: string, payload: Uint8Array): void {
    const t = parseTopic(topic, this.prefix);
    if (t?.kind !== 'site') {
      this.ignore('unknown-topic', topic);
      return;
    }
    try {
      switch (t.channel) {
        case 'ack': {
          const ack = openAck(payload, this.keyFor, t.site);
          this.counts.acks++;
          this.enqueue((now) => this.applyAck(ack, now));
          return;
        }
        case 'state': {
          const state = openState(payload, this.keyFor, t.site);
          this.counts.states++;
          this.enqueue((now) => this.applyState(state, now));
          return;
        }
        case 'status': {
          if (payload.length === 0) return; // a cleared retained message
          const status = this.parseStatus(payload, t.site);
          if (!status) return;
          this.counts.statuses++;
          this.enqueue((now) => this.applyStatus(status, now));
          return;
        }
        default:
          this.ignore('unexpected-channel', topic, t.site);
          return;
      }
    } catch (err) {
      if (isProtocolError(err)) {
        this.ignore(err.code, topic, t.site);
        return;
      }
      this.log.error({ err, topic }, 'uplink handling failed');
      this.ignore('internal', topic, t.site);
    }
  }

  private parseStatus(payload: Uint8Array, site: string): SiteStatus | undefined {
    if (payload.length > 64 * 1024) return this.ignore('too-large', 'status', site);
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(payload).toString('utf8'));
    } catch {
      return this.ignore('malformed', 'status', site);
    }
    const status = check(SiteStatusSchema, json, 'site status');
    if (status.site !== site) return this.ignore('wrong-site', 'status', site);
    if (!this.keyFor(site)) {
      this.unenrolled.delete(site);
      this.unenrolled.set(site, status);
      if (this.unenrolled.size > UNENROLLED_MAX) {
        const oldest = this.unenrolled.keys().next().value;
        if (oldest !== undefined) this.unenrolled.delete(oldest);
      }
      return this.ignore('unknown-site', 'status', site);
    }
    this.unenrolled.delete(site);
    return status;
  }

  /** Commits what is queued; later messages are dropped (their commands are resent, [OUT-8]). */
  close(): void {
    this.flush();
    this.closed = true;
  }

  private enqueue(effect: (now: number) => void): void {
    if (this.closed) return;
    this.queue.push(effect);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.commit(false));
  }

  /**
   * Commits queued effects, at most FLUSH_MAX per transaction: during a large rollout one turn of the
   * event loop can bring thousands of acks, and one synchronous transaction over all of them held the
   * API for seconds (fleet benchmark, 10,000 sites). The rest is committed on the next turn, after
   * pending HTTP requests had theirs. `flush()` (and so `close()`) commits everything.
   */
  flush(): void {
    this.commit(true);
  }

  private commit(all: boolean): void {
    this.flushScheduled = false;
    if (this.closed) return;
    const batch = all ? this.queue : this.queue.splice(0, FLUSH_MAX);
    if (all) this.queue = [];
    if (this.queue.length > 0) {
      this.flushScheduled = true;
      setImmediate(() => this.commit(false));
    }
    if (batch.length === 0) return;
    const now = this.store.now();
    try {
      this.store.tx(() => {
        for (const effect of batch) effect(now);
      });
    } catch (err) {
      this.log.error({ err, messages: batch.length }, 'ingest batch failed');
    }
    const sites = this.progressedSites;
    this.progressedSites = new Set();
    if (sites.size > 0) this.hooks.progressed(sites);
  }

  private applyAck(ack: Ack, now: number): void {
    const site = ack.site;
    this.store.sites.touch(site, now);
    let cmd: CommandSummary | undefined;
    if (ack.seq !== undefined) {
      cmd = this.store.commands.summary(site, ack.seq);
      if (cmd && ack.id && !sameBytes(new Uint8Array(cmd.id), ack.id)) {
        this.log.warn({ site, seq: ack.seq }, 'ack command id does not match the command at that seq');
        cmd = undefined;
      }
    } else if (ack.ref) {
      cmd = this.store.commands.byRef(site, ack.ref);
    }
    this.store.commands.insertAck({
      site,
      useq: ack.useq,
      at: ack.at,
      st: ack.st,
      seq: ack.seq ?? cmd?.seq ?? null,
      cmd_id: ack.id ? Buffer.from(ack.id) : null,
      ref: ack.ref ? Buffer.from(ack.ref) : null,
      rc: ack.rc ?? null,
      msg: ack.msg ?? null,
      type: ack.type ?? null,
      stack: ack.stack ?? null,
      rev: ack.rev ?? null,
      matched: cmd ? 1 : 0,
      received_at: now,
    });
    if (!cmd) return;
    const next = nextStatus(cmd.status, ack);
    if (!next) return;
    const final = FINAL_STATUSES.has(next);
    this.store.commands.setStatus(
      site,
      cmd.seq,
      next,
      ack.rc ?? null,
      now,
      final ? undefined : now + this.pollMs,
    );
    if (cmd.status === 'published' || final) this.progressedSites.add(site);
  }

  private applyState(state: State, now: number): void {
    const row = this.store.sites.row(state.site);
    if (!row) return;
    if (row.state_useq !== null && state.useq <= row.state_useq) {
      this.store.sites.touch(state.site, now);
      return; // a redelivered or older message
    }
    const current = row.state_json ? (JSON.parse(row.state_json) as SiteState) : null;
    this.store.sites.setState(state.site, mergeState(current, state), now);
  }

  private applyStatus(status: SiteStatus, now: number): void {
    const was = this.store.sites.setStatus(status.site, status, now);
    if (status.online && was !== true) this.hooks.online(status.site);
  }
}

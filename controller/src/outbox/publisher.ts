/**
 * The outbox publisher (I1, I4, I5, SPEC [MQTT-3]).
 *
 * - Issue: pending commands are signed in per-site seq order into a window of at most `window`
 *   unacknowledged (`published`) commands per site. Signing sets `prev` to the seq issued just before
 *   and commits the envelope bytes; the command is then `published` (owed to the site).
 * - Send: every `published` command is sent (QoS 1) until the agent's signed ack moves it on; a broker
 *   PUBACK only schedules the next retry (exponential backoff, the SAME bytes). Retries wait while the
 *   site's retained status says offline, so an offline site holds at most `window` copies at the broker.
 *   An `accepted` (or `deferred`) command is resent every `pollMs` until its final ack arrives: the
 *   agent re-acks a duplicate with its recorded status, so a lost final ack is recovered.
 * - Expiry: pending commands past expires-at are marked `expired` and never sent.
 * - Heartbeats: a site with nothing pending or in flight for `heartbeatSec` gets a signed heartbeat
 *   (its own seq; `last` = that seq, the highest published). Since one is only created for an idle
 *   site, at most one is ever in flight, and older finished heartbeats are pruned.
 *
 * Crash safety: a command is committed before it is sent and recorded after its PUBACK; a crash in
 * between resends the same envelope on restart (the agent dedupes by seq and id, I2).
 */
import type { Logger } from 'pino';
import {
  type Command,
  type CommandType,
  decode,
  encodeCommand,
  envelopeRef,
  PROTOCOL_VERSION,
  type Signer,
  type Topics,
} from '../../../protocol/src/index.js';
import { faultPoint } from '../fault.js';
import type { Store } from '../store/index.js';
import { createCommand } from './create.js';

/** The publishing side of the MQTT client (an adapter, so nothing here depends on a broker). */
export interface PublishPort {
  readonly connected: boolean;
  /** Resolves on the broker's PUBACK. */
  publish(topic: string, payload: Uint8Array): Promise<void>;
}

export interface PublisherOptions {
  /** Unacknowledged commands per site at the broker (I4). */
  readonly window: number;
  readonly retryMs: number;
  readonly maxRetryMs: number;
  /** Resend period of an accepted command until its final ack (recovers a lost final ack). */
  readonly pollMs: number;
  readonly tickMs: number;
  /** 0 disables heartbeats. */
  readonly heartbeatSec: number;
  readonly heartbeatTtlSec: number;
  /** Commands signed per transaction. */
  readonly issueBatch: number;
  /** Sends started per pass. */
  readonly sendBatch: number;
}

export interface PublisherDeps {
  readonly store: Store;
  readonly signer: Signer;
  readonly port: PublishPort;
  readonly topics: Topics;
  readonly log: Logger;
  readonly opts: PublisherOptions;
}

interface Outgoing {
  readonly site: string;
  readonly seq: number;
  readonly envelope: Uint8Array;
  /** Sends recorded so far. */
  readonly attempts: number;
}

export class Publisher {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly opts: PublisherOptions;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private sweepWanted = false;
  /** Until start(): a controller used only through its API does not publish. */
  private closed = true;
  /** Commands whose publish awaits its PUBACK (keyed site/seq). */
  private readonly sending = new Set<string>();
  private sent: Outgoing[] = [];
  private flushScheduled = false;
  private finished = false;
  private readonly stats = { issued: 0, sends: 0, retries: 0, expired: 0, heartbeats: 0, publishErrors: 0 };

  constructor(private readonly deps: PublisherDeps) {
    this.store = deps.store;
    this.log = deps.log;
    this.opts = deps.opts;
  }

  start(): void {
    this.closed = false;
    // Issued but never recorded as sent (a crash between commit and PUBACK): send them at once.
    this.store.commands.resetUnsent();
    // Final acks PUBACKed but not yet committed when the last process died are lost ([OUT-8]): poll
    // every open command within one retry period, spread so that a large fleet does not get one burst.
    const spread = Math.min(this.opts.pollMs, this.opts.retryMs);
    const polled = this.store.commands.pollOpenAtStart(this.store.now(), spread);
    if (polled > 0) this.log.info({ polled }, 'open commands polled after start (final acks may be lost)');
    this.timer = setInterval(() => this.tick(), this.opts.tickMs);
    this.timer.unref();
    this.kick({ sweep: true });
  }

  /** Stops issuing, sending and housekeeping; PUBACKs still arriving are recorded by finish(). */
  stop(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** Records the PUBACKs received so far and ignores any later ones (the database is about to close). */
  finish(): void {
    this.stop();
    this.flush();
    this.finished = true;
  }

  /**
   * Schedules a pass (coalesced): issue pending commands into free window slots and publish them;
   * with `sweep`, also resend what is due (retries, and sends a crash interrupted).
   */
  kick(opts: { sweep?: boolean } = {}): void {
    if (opts.sweep) this.sweepWanted = true;
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pass();
    });
  }

  /** A site's status went online: retry its unacknowledged commands soon instead of at their backoff. */
  siteOnline(site: string): void {
    this.store.commands.rescheduleSite(site, this.store.now() + Math.min(this.opts.retryMs, 5000));
    this.kick();
  }

  snapshot(): Record<string, number> {
    return { ...this.stats, sending: this.sending.size };
  }

  /** Periodic duties: expiry, heartbeats, retries. */
  tick(): void {
    if (this.closed) return;
    try {
      const now = this.store.now();
      const expired = this.store.tx(() => this.store.commands.expirePending(Math.floor(now / 1000), now));
      this.stats.expired += expired.length;
      if (this.opts.heartbeatSec > 0) this.heartbeats(now);
    } catch (err) {
      this.log.error({ err }, 'outbox tick failed');
    }
    this.kick({ sweep: true });
  }

  private heartbeats(now: number): void {
    const idle = this.store.commands.idleSitesIssuedBefore(now - this.opts.heartbeatSec * 1000);
    if (idle.length === 0) return;
    const batch = idle.slice(0, this.opts.issueBatch);
    this.store.tx(() => {
      for (const site of batch) {
        const hb = createCommand(
          this.store,
          { site, type: 'heartbeat', body: {}, ttlSec: this.opts.heartbeatTtlSec, actor: 'controller' },
          now,
        );
        this.store.commands.pruneHeartbeats(site, hb.seq);
      }
    });
    this.stats.heartbeats += batch.length;
  }

  private pass(): void {
    if (this.closed || !this.deps.port.connected) return;
    try {
      const issued = this.issue();
      if (issued.length > 0) faultPoint('controller.after-commit-before-publish');
      for (const o of issued) this.publish(o);
      if (this.sweepWanted) {
        this.sweepWanted = false;
        for (const d of this.store.commands.due(this.store.now(), this.opts.sendBatch + this.sending.size)) {
          this.publish({ site: d.site, seq: d.seq, envelope: d.envelope, attempts: d.attempts });
        }
      }
      if (issued.length >= this.opts.issueBatch) this.kick();
    } catch (err) {
      this.log.error({ err }, 'outbox pass failed');
    }
  }

  /**
   * Signs pending commands into each site's window and commits them as `published`, leased for
   * `retryMs` (the sweep leaves them alone while their first publish is under way). Nothing is issued
   * while the broker is unreachable, so commands keep collapsing in the outbox meanwhile (I4).
   */
  private issue(): Outgoing[] {
    const pending = this.store.commands.pending();
    if (pending.length === 0) return [];
    const inflight = this.store.commands.inflightCounts();
    const pick: { site: string; seq: number }[] = [];
    const room = new Map<string, number>();
    for (const p of pending) {
      let r = room.get(p.site);
      if (r === undefined) {
        r = this.opts.window - (inflight.get(p.site) ?? 0);
        room.set(p.site, r);
      }
      if (r <= 0) continue;
      room.set(p.site, r - 1);
      pick.push(p);
      if (pick.length >= this.opts.issueBatch) break;
    }
    if (pick.length === 0) return [];
    const now = this.store.now();
    const nowSec = Math.floor(now / 1000);
    const out: Outgoing[] = [];
    this.store.tx(() => {
      for (const { site, seq } of pick) {
        const row = this.store.commands.get(site, seq);
        if (row?.status !== 'pending') continue;
        if (row.expires_at <= nowSec) {
          this.store.commands.setStatus(site, seq, 'expired', 'expired', now);
          this.stats.expired++;
          continue;
        }
        const prev = this.store.sites.seqIssued(site);
        const cmd = {
          v: PROTOCOL_VERSION,
          site,
          seq,
          prev,
          id: new Uint8Array(row.id),
          iat: nowSec,
          exp: row.expires_at,
          type: row.type as CommandType,
          body: decode(new Uint8Array(row.body)),
        } as Command;
        const envelope = encodeCommand(cmd, this.deps.signer);
        this.store.commands.markIssued(site, seq, {
          prev,
          envelope,
          ref: envelopeRef(envelope),
          now,
          lease: now + this.opts.retryMs,
        });
        out.push({ site, seq, envelope, attempts: 0 });
      }
    });
    this.stats.issued += out.length;
    if (out.length > 0) this.log.debug({ issued: out.length }, 'commands issued');
    return out;
  }

  /** Publishes one envelope (QoS 1) unless it is already under way; its PUBACK is recorded in a batch. */
  private publish(o: Outgoing): void {
    const key = `${o.site}/${o.seq}`;
    if (this.sending.has(key)) return;
    this.sending.add(key);
    this.stats.sends++;
    if (o.attempts > 0) this.stats.retries++;
    this.deps.port.publish(this.deps.topics.cmd(o.site), o.envelope).then(
      () => {
        faultPoint('controller.after-publish-before-record');
        this.sent.push(o);
        this.scheduleFlush();
      },
      (err: unknown) => {
        this.sending.delete(key);
        this.stats.publishErrors++;
        this.log.warn(
          { site: o.site, seq: o.seq, err: (err as Error).message },
          'publish failed; will retry',
        );
      },
    );
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Records PUBACKed sends: attempts and the next retry time (exponential backoff). */
  private flush(): void {
    if (this.finished || this.sent.length === 0) return;
    const batch = this.sent;
    this.sent = [];
    const now = this.store.now();
    try {
      this.store.tx(() => {
        for (const s of batch) {
          const backoff = Math.min(this.opts.retryMs * 2 ** s.attempts, this.opts.maxRetryMs);
          this.store.commands.recordSent(s.site, s.seq, now, now + backoff, now + this.opts.pollMs);
        }
      });
    } catch (err) {
      this.log.error({ err }, 'recording sends failed');
    } finally {
      for (const s of batch) this.sending.delete(`${s.site}/${s.seq}`);
    }
  }
}

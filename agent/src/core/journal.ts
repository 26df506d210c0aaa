/**
 * Command intake (I2, I5, I6, I9): every envelope received on the command topic goes through
 * `intake()`, which decides, in one SQLite transaction, what it is and what ack it gets:
 *
 *  1. size cap (`too-large`), then `openCommand` with trusted time: structure, key, signature, schema,
 *     version, key scope, site, expiry ([ENV-7]). A failure is a rejection carrying only `ref`, except
 *     `expired`/`not-yet-valid`, which come after the signature and site checks and so carry seq/id
 *     ([ACK-3]); an expired command is journalled (`rejected`) so that its slot in the `prev` chain is
 *     filled, a not-yet-valid one is not (the same bytes may pass once the clock has caught up).
 *  2. dedupe: the same envelope again is a duplicate delivery and is re-acked with its recorded status,
 *     never re-executed (I2); another envelope with a seen seq or id, or a seq at or below the
 *     contiguous watermark, is a `replay` ([ORD-4]).
 *  3. per-type vetting: spec decoding, site policy (digests unless tags are allowed), critical specs
 *     and volume deletion need `crit` distinct approvals (`policy`), trust.update must walk one
 *     version with both thresholds ([TRUST-4]).
 *  4. journal + ack: stack commands are journalled `received` and acked `accepted` (their execution is
 *     the sequencer's job); heartbeat, state.request and trust.update are not stack-bound and complete
 *     here (journalled `done`, acked `applied`); the trusted-time floor and last contact move in the same
 *     transaction. Only after the commit does the transport PUBACK (I5).
 *
 * Nothing in here throws for bad input: every rejection is typed (reason code), logged and acked.
 */
import type { Logger } from 'pino';
import {
  COMMAND_LIMITS,
  type Command,
  CommandHeaderSchema,
  check,
  countApprovals,
  criticalReasons,
  decode,
  decodeSpec,
  envelopeRef,
  isProtocolError,
  openCommand,
  parseSign1,
  type ReasonCode,
  removeDigest,
  sha256,
  type TrustedTime,
  type TrustRoot,
} from '../../../protocol/src/index.js';
import { validateTarget } from '../runtime/policy.js';
import type { Alarms } from './alarms.js';
import { isDiskFull } from './db.js';
import { faultPoint } from './fault.js';
import type { Outbox } from './outbox.js';
import { type AgentStore, type JournalRow, META } from './store.js';
import type { PinnedTrust } from './trust.js';
import type { Uplink } from './uplink.js';

export const STACK_TYPES = new Set(['stack.apply', 'stack.remove', 'stack.restart']);

export type IntakeResult =
  /** A new journal row (any status): the sequencer must look at the chain. */
  | { readonly kind: 'journalled'; readonly seq: number; readonly type: string; readonly status: string }
  /** Rejected without a journal row, or a duplicate: acked, nothing else to do. */
  | { readonly kind: 'handled'; readonly rc?: ReasonCode }
  /** Nothing committed: do not PUBACK (the broker keeps the message). */
  | { readonly kind: 'hold'; readonly reason: 'disk-full' | 'error' };

export interface JournalOptions {
  readonly site: string;
  readonly maxEnvelopeBytes: number;
  readonly allowTags: boolean;
}

export interface JournalHooks {
  /** After commit of a verified heartbeat (its `last`). */
  onHeartbeat(last: number): void;
  /** After commit of a verified state.request. */
  onStateRequest(): void;
  /** After commit of a trust.update. */
  onTrustChanged(ver: number): void;
}

type Verdict =
  | { ok: true; stack?: string; rev?: number; root?: TrustRoot; doc?: Uint8Array }
  | { ok: false; rc: ReasonCode; msg: string; stack?: string; rev?: number };

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

/** The verified header of an envelope that openCommand rejected only for time ([ENV-7] order). */
function authenticHeader(bytes: Uint8Array): Command | undefined {
  try {
    const parts = parseSign1(bytes, COMMAND_LIMITS);
    return check(CommandHeaderSchema, decode(parts.payload, COMMAND_LIMITS), 'command') as Command;
  } catch {
    return undefined;
  }
}

export class Journal {
  constructor(
    private readonly opts: JournalOptions,
    private readonly store: AgentStore,
    private readonly outbox: Outbox,
    private readonly uplink: Uplink,
    private readonly trust: PinnedTrust,
    private readonly time: TrustedTime,
    private readonly alarms: Alarms,
    private readonly hooks: JournalHooks,
    private readonly nowMs: () => number,
    private readonly log: Logger,
  ) {}

  /** Decides and durably records what an inbound envelope is. Never throws. */
  intake(bytes: Uint8Array): IntakeResult {
    let result: IntakeResult;
    try {
      result = this.classify(bytes);
    } catch (err) {
      if (isDiskFull(err)) {
        this.alarms.raiseInMemory('disk-full', 'database write failed: disk full');
        return { kind: 'hold', reason: 'disk-full' };
      }
      this.log.error(
        { err: (err as Error).message, ref: Buffer.from(envelopeRef(bytes)).toString('hex') },
        'intake failed',
      );
      try {
        result = this.rejectUnread(bytes, 'internal', 'internal error while journalling');
      } catch {
        return { kind: 'hold', reason: 'error' };
      }
    }
    this.outbox.kick();
    faultPoint('agent.after-commit-before-puback');
    return result;
  }

  private contig(): number {
    return this.store.metaInt(META.contig);
  }

  private classify(bytes: Uint8Array): IntakeResult {
    if (bytes.length > this.opts.maxEnvelopeBytes) {
      return this.rejectUnread(bytes, 'too-large', `envelope of ${bytes.length} bytes`);
    }
    let cmd: Command;
    try {
      cmd = openCommand(bytes, {
        site: this.opts.site,
        trust: this.trust.current,
        nowSec: this.time.nowSec(),
        limits: { ...COMMAND_LIMITS, maxBytes: this.opts.maxEnvelopeBytes },
      }).cmd;
    } catch (err) {
      if (!isProtocolError(err)) throw err;
      // Both come after the signature, scope and site checks: the header is authentic.
      const hdr = err.code === 'expired' || err.code === 'not-yet-valid' ? authenticHeader(bytes) : undefined;
      // Expired for good: journalled, so its slot in the chain is filled.
      if (hdr && err.code === 'expired')
        return this.known(hdr, bytes, { ok: false, rc: err.code, msg: err.message });
      // Not yet valid (the local clock is behind): not journalled, the same bytes may pass later.
      if (hdr) return this.rejectKnown(hdr, err.code, err.message);
      return this.rejectUnread(bytes, err.code, err.message);
    }
    return this.known(cmd, bytes, undefined);
  }

  /** An authentic command for this site: dedupe, vet, journal. */
  private known(cmd: Command, bytes: Uint8Array, timeVerdict: Verdict | undefined): IntakeResult {
    const prior = this.store.journalBySeq(cmd.seq);
    if (prior && sameBytes(prior.envelope, bytes)) return this.duplicate(prior);
    if (prior || this.store.journalById(cmd.id) || cmd.seq <= this.contig()) {
      const why = prior
        ? 'seq seen'
        : cmd.seq <= this.contig()
          ? 'seq at or below watermark'
          : 'command id seen';
      return this.rejectKnown(cmd, 'replay', why);
    }
    const verdict = timeVerdict ?? this.vet(cmd);
    const now = this.nowMs();
    const base = {
      seq: cmd.seq,
      id: cmd.id,
      prev: cmd.prev,
      type: cmd.type,
      stack: verdict.stack ?? null,
      rev: verdict.rev ?? null,
      envelope: bytes,
      received_at: now,
    };
    const ackBase = {
      seq: cmd.seq,
      id: cmd.id,
      type: cmd.type,
      ...(verdict.stack ? { stack: verdict.stack } : {}),
      ...(verdict.rev ? { rev: verdict.rev } : {}),
    };
    const st = this.store.tx((): 'received' | 'done' | 'rejected' => {
      if (timeVerdict === undefined) {
        // Observed only once the signature and the expiry are known good ([TIME-1]).
        if (this.time.observe(cmd.iat)) this.store.setMeta(META.timeFloor, this.time.floor);
        this.store.setMeta(META.lastContact, now);
        if (cmd.type === 'heartbeat') this.store.setMeta(META.lastHeartbeat, now);
      }
      if (!verdict.ok) {
        this.store.insertJournal({
          ...base,
          status: 'rejected',
          ack_st: 'rejected',
          rc: verdict.rc,
          detail: verdict.msg,
        });
        this.uplink.ack({ ...ackBase, st: 'rejected', rc: verdict.rc, msg: verdict.msg });
        return 'rejected';
      }
      if (STACK_TYPES.has(cmd.type)) {
        this.store.insertJournal({ ...base, status: 'received', ack_st: 'accepted', rc: null, detail: null });
        this.uplink.ack({ ...ackBase, st: 'accepted' });
        return 'received';
      }
      if (verdict.root && verdict.doc) this.trust.persist(verdict.doc, verdict.root);
      this.store.insertJournal({ ...base, status: 'received', ack_st: 'applied', rc: null, detail: null });
      this.store.finish(cmd.seq, 'done', 'applied', now);
      this.uplink.ack({ ...ackBase, st: 'applied' });
      return 'done';
    });
    this.log.info(
      {
        seq: cmd.seq,
        prev: cmd.prev,
        type: cmd.type,
        stack: verdict.stack,
        rev: verdict.rev,
        status: st,
        rc: verdict.ok ? undefined : verdict.rc,
      },
      verdict.ok ? 'command journalled' : 'command rejected',
    );
    if (verdict.ok && st === 'done') this.afterImmediate(cmd, verdict);
    return { kind: 'journalled', seq: cmd.seq, type: cmd.type, status: st };
  }

  private afterImmediate(cmd: Command, verdict: Verdict & { ok: true }): void {
    if (cmd.type === 'trust.update' && verdict.root) {
      this.trust.commit(verdict.root);
      this.log.info({ trustVersion: verdict.root.ver }, 'trust root updated');
      this.hooks.onTrustChanged(verdict.root.ver);
    } else if (cmd.type === 'heartbeat') {
      this.hooks.onHeartbeat(cmd.body.last);
    } else if (cmd.type === 'state.request') {
      this.hooks.onStateRequest();
    }
  }

  private vet(cmd: Command): Verdict {
    const trust = this.trust.current;
    switch (cmd.type) {
      case 'stack.apply': {
        const { stack, rev } = cmd.body;
        let spec: ReturnType<typeof decodeSpec>;
        try {
          spec = decodeSpec(cmd.body.spec, cmd.body.z === true);
        } catch (err) {
          if (!isProtocolError(err)) throw err;
          return { ok: false, rc: err.code, msg: err.message, stack, rev };
        }
        const crit = criticalReasons(spec);
        let approved = false;
        if (crit.length > 0) {
          const want = { stack, rev, digest: sha256(cmd.body.spec), site: this.opts.site };
          const n = countApprovals(cmd.body.appr, want, trust);
          if (n < trust.root.crit) {
            return {
              ok: false,
              rc: 'policy',
              msg: `critical (${crit[0]}): ${n}/${trust.root.crit} approvals`,
              stack,
              rev,
            };
          }
          approved = true;
        }
        // The runtime's own checks (volumes, ports, digests unless tags are allowed), at intake.
        const refusal = validateTarget(
          { name: stack, rev, spec, digest: '', approvedCritical: approved },
          { allowTags: this.opts.allowTags },
        );
        if (refusal) return { ok: false, rc: refusal.reason, msg: refusal.detail, stack, rev };
        return { ok: true, stack, rev };
      }
      case 'stack.remove': {
        const { stack } = cmd.body;
        if (cmd.body.vols) {
          const want = { stack, rev: 0, digest: removeDigest(stack), site: this.opts.site };
          const n = countApprovals(cmd.body.appr, want, trust);
          if (n < trust.root.crit) {
            return {
              ok: false,
              rc: 'policy',
              msg: `volume deletion: ${n}/${trust.root.crit} approvals`,
              stack,
            };
          }
        }
        return { ok: true, stack };
      }
      case 'stack.restart':
        return { ok: true, stack: cmd.body.stack };
      case 'trust.update':
        try {
          return { ok: true, root: this.trust.verify(cmd.body.doc, this.time.nowSec()), doc: cmd.body.doc };
        } catch (err) {
          if (!isProtocolError(err)) throw err;
          return { ok: false, rc: err.code, msg: err.message };
        }
      case 'heartbeat':
      case 'state.request':
        return { ok: true };
    }
  }

  private duplicate(row: JournalRow): IntakeResult {
    this.store.tx(() =>
      this.uplink.ack({
        st: row.ack_st,
        seq: row.seq,
        id: row.id,
        type: row.type,
        ...(row.stack ? { stack: row.stack } : {}),
        ...(row.rev ? { rev: row.rev } : {}),
        ...(row.rc ? { rc: row.rc as ReasonCode } : {}),
        ...(row.detail ? { msg: row.detail } : {}),
      }),
    );
    this.log.info({ seq: row.seq, status: row.status, ack: row.ack_st }, 'duplicate delivery: re-acked');
    return { kind: 'handled' };
  }

  /** A rejection of an authentic command that is not journalled (replay). */
  private rejectKnown(cmd: Command, rc: ReasonCode, msg: string): IntakeResult {
    this.store.tx(() =>
      this.uplink.ack({ st: 'rejected', seq: cmd.seq, id: cmd.id, type: cmd.type, rc, msg }),
    );
    this.log.warn({ seq: cmd.seq, type: cmd.type, rc, msg }, 'command rejected');
    return { kind: 'handled', rc };
  }

  /** A rejection of an envelope whose seq/id cannot be trusted: only its `ref` is reported ([ACK-3]). */
  private rejectUnread(bytes: Uint8Array, rc: ReasonCode, msg: string): IntakeResult {
    const ref = envelopeRef(bytes);
    this.store.tx(() => this.uplink.ack({ st: 'rejected', ref, rc, msg }));
    this.log.warn(
      { ref: Buffer.from(ref).toString('hex'), bytes: bytes.length, rc, msg },
      'envelope rejected',
    );
    return { kind: 'handled', rc };
  }
}

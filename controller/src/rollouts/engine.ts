/**
 * The rollout engine: a persisted state machine advanced by a tick (a timer, plus `wake()` from ingest
 * events: acks, sites coming online). Everything it knows is in SQLite (./schema.ts), so a restarted
 * controller continues where the previous one stopped.
 *
 *   pending ─► running ─► (awaiting-approval ─► running)* ─► completed
 *                 │  ▲
 *                 ▼  │ resume
 *               paused
 *   any active state ─► (abort: threshold or API) ─► rolling-back ─► rolled-back
 *                                                  └► aborted (nothing to roll back, or rollback off)
 *
 * Rules:
 * - Phases (canary, then batches) are planned at creation from the resolved target; pinned sites
 *   (another revision pinned, as for deployments) are `skipped` and excluded from the plan. A pin set
 *   later is honoured when the site's phase starts.
 * - Starting a phase creates its commands (`stackApplyForSite`, the deployments' building block) and
 *   records each site's seq and previous revision and `phase_started` in ONE transaction: a phase's
 *   commands are created exactly once, whatever crashes.
 * - A site passes when its command is `applied` and its reported state runs the revision `healthy`
 *   for `healthSec` (agents health-gate locally and ack `applied` only when healthy; this is the
 *   controller's second gate). It fails on a final non-applied status (failed, rolled-back, rejected,
 *   expired, superseded, cancelled), on reporting the revision `unhealthy` after applying it, or at
 *   its deadline (`offline: skip` turns an offline site's deadline into `skipped`, and skips sites
 *   already offline when their phase starts).
 * - The failure threshold is checked on every tick (abort at once); the success threshold when a
 *   phase has an outcome for every site.
 * - Abort: cancel the rollout's unsent (pending) commands, then roll back every touched site (its
 *   command was issued): `stack.apply` of its previous revision, or `stack.remove` (volumes kept)
 *   when it had none; nothing when it already ran the rollout's revision before. All in the same
 *   transaction as the state change.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Topics } from '../../../protocol/src/index.js';
import { RevisionContext, stackApplyForSite } from '../deploy.js';
import { isApiError } from '../errors.js';
import { createCommand } from '../outbox/create.js';
import type { SigningKeys } from '../signing.js';
import { type CommandStatus, FINAL_STATUSES } from '../store/commands.js';
import type { Store } from '../store/index.js';
import type { Revision } from '../store/stacks.js';
import { failureLimit } from './definition.js';
import { RolloutError } from './errors.js';
import { type Rollout, type RolloutSiteProgress, type RolloutState, RolloutsRepo, TERMINAL } from './repo.js';
import { rolloutStatus, rolloutView } from './view.js';

/** Publishes retained JSON (resolves on the broker's PUBACK). */
export interface StatusPort {
  readonly connected: boolean;
  publishRetained(topic: string, payload: string): Promise<void>;
}

export interface RolloutEngineDeps {
  readonly store: Store;
  readonly signing: SigningKeys;
  readonly topics: Topics;
  readonly log: Logger;
  /** Wakes the outbox publisher (new commands). */
  readonly kick: () => void;
  readonly status?: StatusPort;
  /** Tick period, ms (default 1000). */
  readonly tickMs?: number;
}

const FAILED_COMMAND: ReadonlySet<string> = new Set([
  'failed',
  'rejected',
  'rolled-back',
  'expired',
  'superseded',
  'cancelled',
]);

interface StackView {
  name: string;
  rev: number;
  h: string;
}

function reportedStack(stateJson: string | null, stack: string): StackView | undefined {
  if (!stateJson) return undefined;
  return (JSON.parse(stateJson) as { stacks?: StackView[] }).stacks?.find((s) => s.name === stack);
}

export class RolloutEngine {
  readonly repo: RolloutsRepo;
  private readonly store: Store;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private running = false;
  private readonly publishing = new Set<string>();

  constructor(private readonly deps: RolloutEngineDeps) {
    this.store = deps.store;
    this.repo = new RolloutsRepo(deps.store.db);
    this.log = deps.log;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.timer = setInterval(() => this.tick(), this.deps.tickMs ?? 1000);
    this.timer.unref();
    this.wake();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Schedules a tick soon (coalesced): an ack, a state change or a site coming online. */
  wake(): void {
    if (this.scheduled || !this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.running) this.tick();
    });
  }

  /** One pass over every rollout with work left. Safe to call any time (tests call it directly). */
  tick(): void {
    let created = false;
    let work: Rollout[];
    try {
      work = this.repo.workList();
    } catch (err) {
      this.log.error({ err }, 'rollout tick failed');
      return;
    }
    for (const r of work) {
      try {
        if (!TERMINAL.has(r.state))
          created = this.store.tx(() => this.step(r.id, this.store.now())) || created;
      } catch (err) {
        this.log.error({ err, rollout: r.id }, 'rollout step failed');
      }
    }
    if (created) this.deps.kick();
    this.publishStatuses();
  }

  /** Advances one rollout; returns true when commands were created. Runs inside a transaction. */
  private step(id: string, now: number): boolean {
    let r = this.repo.get(id);
    if (!r || TERMINAL.has(r.state)) return false;
    if (r.state === 'pending') {
      this.repo.update(id, { state: 'running', started_at: now, next_at: now }, now);
      r = this.repo.get(id)!;
    }
    if (r.state === 'rolling-back') return this.followRollback(r, now);

    let created = false;
    if (r.phaseStarted) {
      this.evaluate(r, now);
      const counts = this.repo.outcomeCounts(id);
      const limit = failureLimit(r.def, counts.planned);
      if (counts.failed >= limit) {
        return this.abortTx(
          r,
          `failure threshold reached: ${counts.failed} failed (limit ${limit})`,
          now,
          r.def.rollback,
        );
      }
      const phase = this.repo.sites(id, r.phase);
      if (phase.every((s) => s.outcome !== null)) {
        const considered = phase.filter((s) => s.outcome !== 'skipped');
        const healthy = considered.filter((s) => s.outcome === 'healthy').length;
        const fraction = considered.length === 0 ? 1 : healthy / considered.length;
        if (fraction + 1e-9 < r.def.successThreshold) {
          return this.abortTx(
            r,
            `success threshold not met in phase ${r.phase}: ${healthy}/${considered.length} healthy (need ${r.def.successThreshold})`,
            now,
            r.def.rollback,
          );
        }
        if (r.phase + 1 >= r.phases) {
          this.repo.update(
            id,
            { state: 'completed', finished_at: now, phase_started: 0, phase: r.phases },
            now,
          );
          this.log.info({ rollout: id }, 'rollout completed');
          return false;
        }
        const next: RolloutState = r.def.approval ? 'awaiting-approval' : 'running';
        this.repo.update(
          id,
          {
            phase: r.phase + 1,
            phase_started: 0,
            next_at: now + r.def.delaySec * 1000,
            ...(r.state === 'paused' ? { resume_state: next } : { state: next }),
          },
          now,
        );
        r = this.repo.get(id)!;
      }
    }
    if (r.state === 'running' && !r.phaseStarted && now >= r.nextAt) created = this.startPhase(r, now);
    return created;
  }

  /** Records outcomes for the current phase's sites still in progress. */
  private evaluate(r: Rollout, now: number): void {
    const open = this.repo
      .progress(r.id)
      .filter((p) => p.phase === r.phase && p.outcome === null && p.seq !== null);
    for (const p of open) this.evaluateSite(r, p, now);
  }

  private evaluateSite(r: Rollout, p: RolloutSiteProgress, now: number): void {
    const status = p.cmd_status as CommandStatus | null;
    if (status && FAILED_COMMAND.has(status)) {
      this.repo.finishSite(
        r.id,
        p.site,
        'failed',
        `${status}${p.cmd_reason ? `: ${p.cmd_reason}` : ''}`,
        now,
      );
      return;
    }
    if (status === 'applied') {
      const st = reportedStack(p.state_json, r.stack);
      if (st?.rev === r.rev && st.h === 'healthy') {
        const since = p.healthy_since ?? now;
        if (p.healthy_since === null) this.repo.setHealthySince(r.id, p.site, now);
        if (now - since >= r.def.healthSec * 1000) {
          this.repo.finishSite(r.id, p.site, 'healthy', null, now);
          return;
        }
      } else if (st?.rev === r.rev && st.h === 'unhealthy') {
        this.repo.finishSite(r.id, p.site, 'failed', 'unhealthy after apply', now);
        return;
      } else if (p.healthy_since !== null) {
        this.repo.setHealthySince(r.id, p.site, null);
      }
    }
    if (p.started_at !== null && now - p.started_at >= r.def.deadlineSec * 1000) {
      const offline = p.online !== 1;
      if (offline && r.def.offline === 'skip') {
        this.store.commands.cancel(p.site, p.seq!, now);
        this.repo.finishSite(r.id, p.site, 'skipped', 'offline at its deadline', now);
      } else {
        this.repo.finishSite(
          r.id,
          p.site,
          'failed',
          `deadline (${r.def.deadlineSec}s) passed${offline ? ' while offline' : ''}${status ? `; command ${status}` : ''}`,
          now,
        );
      }
    }
  }

  /** Creates the current phase's commands and records them, once (the caller's transaction). */
  private startPhase(r: Rollout, now: number): boolean {
    const revision = this.store.stacks.revision(r.stack, r.rev);
    if (!revision) {
      this.abortTx(r, `revision ${r.stack}@${r.rev} no longer exists`, now, false);
      return false;
    }
    const rc = new RevisionContext(revision);
    const ctx = {
      store: this.store,
      actor: r.createdBy,
      ttlSec: r.def.ttlSec,
      now,
      deployment: r.id,
      ...(r.def.approve && this.deps.signing.approver ? { approver: this.deps.signing.approver } : {}),
    };
    let created = 0;
    for (const s of this.repo.sites(r.id, r.phase)) {
      if (s.outcome !== null || s.seq !== null) continue;
      const pinned = this.store.sites.pin(s.site, r.stack);
      if (pinned !== undefined && pinned !== r.rev) {
        this.repo.finishSite(r.id, s.site, 'skipped', `pinned to ${r.stack}@${pinned}`, now);
        continue;
      }
      const row = this.store.sites.row(s.site);
      if (r.def.offline === 'skip' && row?.online !== 1) {
        this.repo.finishSite(r.id, s.site, 'skipped', 'offline when its phase started', now);
        continue;
      }
      const prevRev = this.repo.previousRev(s.site, r.stack, row?.state_json ?? null);
      try {
        const c = stackApplyForSite(ctx, rc, s.site);
        this.repo.startSite(r.id, s.site, { seq: c.seq, prevRev, now });
        created++;
      } catch (err) {
        if (!isApiError(err)) throw err;
        this.repo.finishSite(r.id, s.site, 'failed', `${err.code}: ${err.detail}`, now);
      }
    }
    this.repo.update(r.id, { phase_started: 1 }, now);
    this.log.info({ rollout: r.id, phase: r.phase, commands: created }, 'rollout phase started');
    return created > 0;
  }

  /**
   * Aborts: cancels unsent commands, and (with `rollback`) queues each touched site's rollback. Runs
   * in the caller's transaction. Returns true when commands were created.
   */
  abortTx(r: Rollout, reason: string, now: number, rollback: boolean): boolean {
    let rollbacks = 0;
    const revisions = new Map<number, RevisionContext | null>();
    const revisionCtx = (rev: number): RevisionContext | null => {
      if (!revisions.has(rev)) {
        const rv: Revision | undefined = this.store.stacks.revision(r.stack, rev);
        revisions.set(rev, rv ? new RevisionContext(rv) : null);
      }
      return revisions.get(rev)!;
    };
    const ctx = {
      store: this.store,
      actor: r.createdBy,
      ttlSec: r.def.ttlSec,
      now,
      deployment: r.id,
      ...(this.deps.signing.approver ? { approver: this.deps.signing.approver } : {}),
    };
    for (const p of this.repo.progress(r.id)) {
      if (p.seq === null) continue;
      // Never issued: it cannot have reached the site. Cancel it (it is never sent) and move on.
      if (p.cmd_status === 'pending' && this.store.commands.cancel(p.site, p.seq, now)) continue;
      if (p.cmd_issued_at === null) continue;
      if (!rollback || p.rb_seq !== null) continue;
      if (p.prev_rev === r.rev) continue; // it ran this revision before the rollout
      try {
        if (p.prev_rev === null) {
          const c = createCommand(
            this.store,
            {
              site: p.site,
              type: 'stack.remove',
              body: { stack: r.stack },
              ttlSec: r.def.ttlSec,
              actor: r.createdBy,
              deployment: r.id,
            },
            now,
          );
          this.repo.setRollback(r.id, p.site, c.seq, 'stack.remove');
          rollbacks++;
          continue;
        }
        const rc = revisionCtx(p.prev_rev);
        if (!rc) {
          this.log.warn(
            { rollout: r.id, site: p.site, rev: p.prev_rev },
            'previous revision unknown: no rollback',
          );
          continue;
        }
        const c = stackApplyForSite(ctx, rc, p.site);
        this.repo.setRollback(r.id, p.site, c.seq, 'stack.apply');
        rollbacks++;
      } catch (err) {
        if (!isApiError(err)) throw err;
        this.log.warn({ rollout: r.id, site: p.site, code: err.code }, 'rollback command refused');
      }
    }
    this.repo.update(
      r.id,
      rollbacks > 0
        ? { state: 'rolling-back', reason, resume_state: null }
        : { state: 'aborted', reason, resume_state: null, finished_at: now },
      now,
    );
    this.log.warn({ rollout: r.id, reason, rollbacks }, 'rollout aborted');
    return rollbacks > 0;
  }

  private followRollback(r: Rollout, now: number): boolean {
    const pending = this.repo
      .progress(r.id)
      .filter((p) => p.rb_seq !== null && !FINAL_STATUSES.has(p.rb_status as CommandStatus));
    if (pending.length === 0) this.repo.update(r.id, { state: 'rolled-back', finished_at: now }, now);
    return false;
  }

  // ---- operator actions (called by the API inside its audited transaction) -----------------------

  pause(r: Rollout, now: number): void {
    if (r.state !== 'running' && r.state !== 'pending' && r.state !== 'awaiting-approval')
      throw this.stateError(r, 'pause');
    this.repo.update(
      r.id,
      { state: 'paused', resume_state: r.state === 'pending' ? 'running' : r.state },
      now,
    );
  }

  resume(r: Rollout, now: number): void {
    if (r.state !== 'paused') throw this.stateError(r, 'resume');
    this.repo.update(r.id, { state: r.resumeState ?? 'running', resume_state: null }, now);
  }

  approve(r: Rollout, now: number): void {
    if (r.state !== 'awaiting-approval') throw this.stateError(r, 'approve');
    this.repo.update(r.id, { state: 'running', next_at: Math.min(r.nextAt, now) }, now);
  }

  abort(r: Rollout, reason: string, rollback: boolean, now: number): boolean {
    if (TERMINAL.has(r.state) || r.state === 'rolling-back') throw this.stateError(r, 'abort');
    return this.abortTx(r, reason, now, rollback);
  }

  private stateError(r: Rollout, what: string): Error {
    return new RolloutStateError(`cannot ${what} rollout ${r.id}: it is ${r.state}`);
  }

  // ---- retained status ------------------------------------------------------------------------------

  view(r: Rollout, sites: boolean) {
    return rolloutView(r, this.repo.progress(r.id), { sites });
  }

  /** Publishes the retained status of every rollout whose status changed since its last PUBACK. */
  private publishStatuses(): void {
    const port = this.deps.status;
    if (!port?.connected) return;
    let work: Rollout[];
    try {
      work = this.repo.workList();
    } catch {
      return;
    }
    for (const r of work) {
      if (this.publishing.has(r.id)) continue;
      const status = rolloutStatus(this.view(r, false));
      const body = JSON.stringify(status);
      const hash = createHash('sha256').update(body).digest('hex').slice(0, 32);
      if (r.statusHash === hash) continue;
      this.publishing.add(r.id);
      port
        .publishRetained(
          this.deps.topics.rolloutStatus(r.id),
          JSON.stringify({ ...status, ts: new Date(this.store.now()).toISOString() }),
        )
        .then(
          () => {
            if (this.running) this.repo.setStatusHash(r.id, hash);
          },
          (err: unknown) =>
            this.log.warn({ rollout: r.id, err: (err as Error).message }, 'status publish failed'),
        )
        .finally(() => this.publishing.delete(r.id));
    }
  }
}

class RolloutStateError extends RolloutError {
  constructor(detail: string) {
    super('rollout-state', detail);
  }
}

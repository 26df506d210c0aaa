/** SQL for rollouts and their per-site plan/progress (tables: ./schema.ts). */
import { cachedPrepare, type Db, type Prepare } from '../store/db.js';
import type { Definition } from './definition.js';

export const ROLLOUT_STATES = [
  'pending',
  'running',
  'paused',
  'awaiting-approval',
  'rolling-back',
  'completed',
  'aborted',
  'rolled-back',
] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];
export const TERMINAL: ReadonlySet<RolloutState> = new Set(['completed', 'aborted', 'rolled-back']);
/** States in which the engine still has work (phases to start, sites to watch, rollbacks to follow). */
export const ACTIVE: readonly RolloutState[] = [
  'pending',
  'running',
  'paused',
  'awaiting-approval',
  'rolling-back',
];

export type Outcome = 'healthy' | 'failed' | 'skipped';

export interface RolloutRow {
  id: string;
  stack: string;
  rev: number;
  target: string;
  def: string;
  state: RolloutState;
  resume_state: RolloutState | null;
  phase: number;
  phases: number;
  phase_started: number;
  next_at: number;
  reason: string | null;
  created_by: string;
  created_at: number;
  started_at: number | null;
  updated_at: number;
  finished_at: number | null;
  status_hash: string | null;
}

export interface Rollout {
  readonly id: string;
  readonly stack: string;
  readonly rev: number;
  readonly target: Record<string, unknown>;
  readonly def: Definition;
  readonly state: RolloutState;
  readonly resumeState: RolloutState | null;
  readonly phase: number;
  readonly phases: number;
  readonly phaseStarted: boolean;
  readonly nextAt: number;
  readonly reason: string | null;
  readonly createdBy: string;
  readonly createdAt: number;
  readonly startedAt: number | null;
  readonly updatedAt: number;
  readonly finishedAt: number | null;
  readonly statusHash: string | null;
}

export interface RolloutSiteRow {
  rollout: string;
  site: string;
  ord: number;
  phase: number | null;
  seq: number | null;
  prev_rev: number | null;
  started_at: number | null;
  healthy_since: number | null;
  outcome: Outcome | null;
  reason: string | null;
  done_at: number | null;
  rb_seq: number | null;
  rb_type: string | null;
}

/** A site row joined with its command's and rollback command's status. */
export interface RolloutSiteProgress extends RolloutSiteRow {
  cmd_status: string | null;
  cmd_reason: string | null;
  cmd_issued_at: number | null;
  rb_status: string | null;
  online: number | null;
  state_json: string | null;
}

const toRollout = (r: RolloutRow): Rollout => ({
  id: r.id,
  stack: r.stack,
  rev: r.rev,
  target: JSON.parse(r.target) as Record<string, unknown>,
  def: JSON.parse(r.def) as Definition,
  state: r.state,
  resumeState: r.resume_state,
  phase: r.phase,
  phases: r.phases,
  phaseStarted: r.phase_started === 1,
  nextAt: r.next_at,
  reason: r.reason,
  createdBy: r.created_by,
  createdAt: r.created_at,
  startedAt: r.started_at,
  updatedAt: r.updated_at,
  finishedAt: r.finished_at,
  statusHash: r.status_hash,
});

export class RolloutsRepo {
  private readonly prepare: Prepare;

  constructor(readonly db: Db) {
    this.prepare = cachedPrepare(db);
  }

  insert(r: {
    id: string;
    stack: string;
    rev: number;
    target: Record<string, unknown>;
    def: Definition;
    phases: number;
    createdBy: string;
    now: number;
  }): void {
    this.prepare(
      `INSERT INTO rollouts (id, stack, rev, target, def, state, phases, created_by, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)`,
    ).run(
      r.id,
      r.stack,
      r.rev,
      JSON.stringify(r.target),
      JSON.stringify(r.def),
      r.phases,
      r.createdBy,
      r.now,
      r.now,
    );
  }

  insertSite(s: {
    rollout: string;
    site: string;
    ord: number;
    phase: number | null;
    outcome?: Outcome;
    reason?: string;
    now: number;
  }): void {
    this.prepare(
      `INSERT INTO rollout_sites (rollout, site, ord, phase, outcome, reason, done_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(s.rollout, s.site, s.ord, s.phase, s.outcome ?? null, s.reason ?? null, s.outcome ? s.now : null);
  }

  exists(id: string): boolean {
    return this.prepare('SELECT 1 FROM rollouts WHERE id = ?').get(id) !== undefined;
  }

  get(id: string): Rollout | undefined {
    const r = this.prepare<[string], RolloutRow>('SELECT * FROM rollouts WHERE id = ?').get(id);
    return r ? toRollout(r) : undefined;
  }

  list(opts: { stack?: string | undefined; state?: string | undefined; limit: number }): Rollout[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (opts.stack) {
      where.push('stack = ?');
      params.push(opts.stack);
    }
    if (opts.state) {
      where.push('state = ?');
      params.push(opts.state);
    }
    return this.prepare<unknown[], RolloutRow>(
      `SELECT * FROM rollouts ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
         ORDER BY created_at DESC, id LIMIT ?`,
    )
      .all(...params, opts.limit)
      .map(toRollout);
  }

  /** Rollouts the engine still works on, plus finished ones whose final status is not yet published. */
  workList(): Rollout[] {
    const marks = ACTIVE.map(() => '?').join(',');
    return this.prepare<string[], RolloutRow>(
      `SELECT * FROM rollouts WHERE state IN (${marks}) OR status_hash IS NULL ORDER BY created_at, id`,
    )
      .all(...ACTIVE)
      .map(toRollout);
  }

  /** Active rollouts of `stack` sharing at least one site with `sites` (conflicts). */
  activeOverlapping(stack: string, sites: readonly string[]): string[] {
    const marks = ACTIVE.map(() => '?').join(',');
    const active = this.prepare<string[], { id: string }>(
      `SELECT id FROM rollouts WHERE stack = ? AND state IN (${marks})`,
    ).all(stack, ...ACTIVE);
    if (active.length === 0) return [];
    const want = new Set(sites);
    return active.filter((a) => this.siteIds(a.id).some((s) => want.has(s))).map((a) => a.id);
  }

  siteIds(id: string): string[] {
    return this.prepare<[string], { site: string }>(
      'SELECT site FROM rollout_sites WHERE rollout = ? ORDER BY ord',
    )
      .all(id)
      .map((r) => r.site);
  }

  sites(id: string, phase?: number): RolloutSiteRow[] {
    return phase === undefined
      ? this.prepare<[string], RolloutSiteRow>(
          'SELECT * FROM rollout_sites WHERE rollout = ? ORDER BY ord',
        ).all(id)
      : this.prepare<[string, number], RolloutSiteRow>(
          'SELECT * FROM rollout_sites WHERE rollout = ? AND phase = ? ORDER BY ord',
        ).all(id, phase);
  }

  progress(id: string): RolloutSiteProgress[] {
    return this.prepare<[string], RolloutSiteProgress>(
      `SELECT rs.*, c.status AS cmd_status, c.reason AS cmd_reason, c.issued_at AS cmd_issued_at,
              rb.status AS rb_status, s.online AS online, s.state_json AS state_json
         FROM rollout_sites rs
         JOIN sites s ON s.id = rs.site
         LEFT JOIN commands c ON c.site = rs.site AND c.seq = rs.seq
         LEFT JOIN commands rb ON rb.site = rs.site AND rb.seq = rs.rb_seq
         WHERE rs.rollout = ? ORDER BY rs.ord`,
    ).all(id);
  }

  update(
    id: string,
    fields: Partial<
      Pick<
        RolloutRow,
        | 'state'
        | 'resume_state'
        | 'phase'
        | 'phase_started'
        | 'next_at'
        | 'reason'
        | 'started_at'
        | 'finished_at'
      >
    >,
    now: number,
  ): void {
    const cols = Object.keys(fields);
    if (cols.length === 0) return;
    const set = cols.map((c) => `${c} = @${c}`).join(', ');
    // Any change makes the retained status stale: the engine republishes rows without a hash.
    this.prepare(`UPDATE rollouts SET ${set}, updated_at = @now, status_hash = NULL WHERE id = @id`).run({
      ...fields,
      id,
      now,
    });
  }

  setStatusHash(id: string, hash: string): void {
    this.prepare('UPDATE rollouts SET status_hash = ? WHERE id = ?').run(hash, id);
  }

  startSite(id: string, site: string, f: { seq: number; prevRev: number | null; now: number }): void {
    this.prepare(
      'UPDATE rollout_sites SET seq = ?, prev_rev = ?, started_at = ? WHERE rollout = ? AND site = ?',
    ).run(f.seq, f.prevRev, f.now, id, site);
  }

  setHealthySince(id: string, site: string, t: number | null): void {
    this.prepare('UPDATE rollout_sites SET healthy_since = ? WHERE rollout = ? AND site = ?').run(
      t,
      id,
      site,
    );
  }

  /** Records a site's outcome once (a later call does not overwrite it). */
  finishSite(id: string, site: string, outcome: Outcome, reason: string | null, now: number): boolean {
    return (
      this.prepare(
        `UPDATE rollout_sites SET outcome = ?, reason = ?, done_at = ?
           WHERE rollout = ? AND site = ? AND outcome IS NULL`,
      ).run(outcome, reason, now, id, site).changes > 0
    );
  }

  setRollback(id: string, site: string, seq: number, type: string): void {
    this.prepare('UPDATE rollout_sites SET rb_seq = ?, rb_type = ? WHERE rollout = ? AND site = ?').run(
      seq,
      type,
      id,
      site,
    );
  }

  /** Forward outcomes so far. */
  outcomeCounts(id: string): { healthy: number; failed: number; skipped: number; planned: number } {
    const rows = this.prepare<[string], { outcome: string | null; planned: number; n: number }>(
      `SELECT outcome, phase IS NOT NULL AS planned, COUNT(*) AS n FROM rollout_sites WHERE rollout = ?
         GROUP BY outcome, phase IS NOT NULL`,
    ).all(id);
    const c = { healthy: 0, failed: 0, skipped: 0, planned: 0 };
    for (const r of rows) {
      if (r.planned === 1) c.planned += r.n;
      if (r.outcome === 'healthy' || r.outcome === 'failed' || r.outcome === 'skipped') c[r.outcome] += r.n;
    }
    return c;
  }

  /**
   * What a site ran before: its reported running revision of the stack, else the revision of its last
   * applied stack command (a `stack.remove` means none), else none.
   */
  previousRev(site: string, stack: string, stateJson: string | null): number | null {
    if (stateJson) {
      const st = (JSON.parse(stateJson) as { stacks?: { name: string; rev: number }[] }).stacks?.find(
        (s) => s.name === stack,
      );
      if (st) return st.rev > 0 ? st.rev : null;
    }
    const last = this.prepare<[string, string], { type: string; rev: number | null }>(
      `SELECT type, rev FROM commands WHERE site = ? AND stack = ? AND status = 'applied'
         AND type IN ('stack.apply', 'stack.remove') ORDER BY seq DESC LIMIT 1`,
    ).get(site, stack);
    return last?.type === 'stack.apply' ? last.rev : null;
  }
}

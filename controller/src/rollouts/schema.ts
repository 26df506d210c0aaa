/**
 * The rollouts' tables (controller migration 3, appended to `store/migrations.ts`).
 *
 * - `rollouts`: one row per rollout: what (stack, rev), to whom (target as given), how (the validated
 *   definition as JSON), and the persisted state machine: `state`, the current `phase`, whether that
 *   phase's commands were created (`phase_started`), when the next phase may start (`next_at`).
 * - `rollout_sites`: the plan (phase of every targeted site, fixed at creation) and each site's
 *   progress: the command created for it (`seq`, committed in the same transaction as the command and
 *   `phase_started`, so a phase's commands are created exactly once across restarts), the revision it
 *   ran before (`prev_rev`, the rollback target), the health-gate clock (`healthy_since`), the
 *   outcome (`healthy` | `failed` | `skipped`) and the rollback command (`rb_seq`, `rb_type`).
 */
import type { Db } from '../store/db.js';

/**
 * Bridge until migration 3 is appended to `store/migrations.ts` (`ROLLOUTS_MIGRATION` there): creates
 * the tables when they are missing. The statements are `IF NOT EXISTS`, so the real migration runs
 * cleanly over a database this bridge already touched. A no-op once the migration exists.
 */
export function ensureRolloutSchema(db: Db): void {
  const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rollout_sites'").get();
  if (!has) db.exec(ROLLOUTS_MIGRATION);
}

export const ROLLOUTS_MIGRATION = `
  CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    stack TEXT NOT NULL,
    rev INTEGER NOT NULL,
    target TEXT NOT NULL,
    def TEXT NOT NULL,
    state TEXT NOT NULL,
    resume_state TEXT,
    phase INTEGER NOT NULL DEFAULT 0,
    phases INTEGER NOT NULL,
    phase_started INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER,
    status_hash TEXT
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts (state);

  CREATE TABLE IF NOT EXISTS rollout_sites (
    rollout TEXT NOT NULL REFERENCES rollouts (id),
    site TEXT NOT NULL REFERENCES sites (id),
    ord INTEGER NOT NULL,
    phase INTEGER,
    seq INTEGER,
    prev_rev INTEGER,
    started_at INTEGER,
    healthy_since INTEGER,
    outcome TEXT,
    reason TEXT,
    done_at INTEGER,
    rb_seq INTEGER,
    rb_type TEXT,
    PRIMARY KEY (rollout, site)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS rollout_sites_phase ON rollout_sites (rollout, phase, ord);
  CREATE INDEX IF NOT EXISTS rollout_sites_site ON rollout_sites (site, rollout);
`;

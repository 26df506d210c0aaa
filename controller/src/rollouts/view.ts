/**
 * Rollout progress as the API, the CLI and the retained `{p}/rollout/{id}/status` topic show it.
 *
 * Per-site status (one of SITE_STATUSES): `pending` (its phase has not started, or its command waits
 * in the outbox), `offline` (its command is owed but the site's retained status says offline), `sent`,
 * `accepted`, `deferred`, `applied` (acked, health gate running), `healthy` (passed the gate),
 * `failed`, `skipped` (pinned, or offline under `offline: skip`), `cancelled` (its unsent command was
 * cancelled by an abort), `rolling-back`, `rolled-back`, `rollback-failed`.
 */
import { type CommandStatus, FINAL_STATUSES } from '../store/commands.js';
import type { Rollout, RolloutSiteProgress } from './repo.js';

export const SITE_STATUSES = [
  'pending',
  'offline',
  'sent',
  'accepted',
  'deferred',
  'applied',
  'healthy',
  'failed',
  'skipped',
  'cancelled',
  'rolling-back',
  'rolled-back',
  'rollback-failed',
] as const;
export type SiteStatusName = (typeof SITE_STATUSES)[number];

export function siteStatus(p: RolloutSiteProgress): SiteStatusName {
  if (p.rb_seq !== null) {
    if (p.rb_status === 'applied') return 'rolled-back';
    return p.rb_status && FINAL_STATUSES.has(p.rb_status as CommandStatus)
      ? 'rollback-failed'
      : 'rolling-back';
  }
  if (p.outcome === 'skipped') return 'skipped';
  if (p.outcome === 'healthy') return 'healthy';
  if (p.outcome === 'failed') return 'failed';
  if (p.seq === null) return 'pending';
  switch (p.cmd_status) {
    case 'pending':
      return p.online === 0 ? 'offline' : 'pending';
    case 'published':
      return p.online === 0 ? 'offline' : 'sent';
    case 'accepted':
      return 'accepted';
    case 'deferred':
      return 'deferred';
    case 'applied':
      return 'applied';
    case 'cancelled':
      return 'cancelled';
    default:
      return 'failed';
  }
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

function countBy(list: readonly SiteStatusName[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of list) out[s] = (out[s] ?? 0) + 1;
  return out;
}

export function rolloutView(r: Rollout, progress: readonly RolloutSiteProgress[], opts: { sites: boolean }) {
  const statuses = progress.map(siteStatus);
  const phases = Array.from({ length: r.phases }, (_, i) => {
    const idx = progress.flatMap((p, j) => (p.phase === i ? [j] : []));
    const state =
      i < r.phase || (i === r.phase && r.state === 'completed')
        ? 'done'
        : i === r.phase && r.phaseStarted
          ? 'running'
          : 'waiting';
    return {
      index: i,
      name: i === 0 ? 'canary' : `batch ${i}`,
      size: idx.length,
      state,
      counts: countBy(idx.map((j) => statuses[j]!)),
    };
  });
  const failed = progress.filter((p) => p.outcome === 'failed').length;
  return {
    id: r.id,
    stack: r.stack,
    rev: r.rev,
    target: r.target,
    state: r.state,
    reason: r.reason,
    phase: r.phase,
    phaseCount: r.phases,
    nextPhaseAt: r.state === 'running' && !r.phaseStarted && r.nextAt > 0 ? iso(r.nextAt) : null,
    definition: r.def,
    createdBy: r.createdBy,
    createdAt: iso(r.createdAt)!,
    startedAt: iso(r.startedAt),
    updatedAt: iso(r.updatedAt)!,
    finishedAt: iso(r.finishedAt),
    total: progress.length,
    failures: failed,
    expired: progress.filter((p) => p.cmd_status === 'expired').length,
    counts: countBy(statuses),
    phases,
    ...(opts.sites
      ? {
          sites: progress.map((p, j) => ({
            site: p.site,
            phase: p.phase,
            status: statuses[j]!,
            outcome: p.outcome,
            reason: p.reason ?? p.cmd_reason,
            seq: p.seq,
            command: p.cmd_status,
            prevRev: p.prev_rev,
            startedAt: iso(p.started_at),
            healthySince: iso(p.healthy_since),
            doneAt: iso(p.done_at),
            rollback: p.rb_seq === null ? null : { seq: p.rb_seq, type: p.rb_type, status: p.rb_status },
          })),
        }
      : {}),
  };
}
export type RolloutView = ReturnType<typeof rolloutView>;

/**
 * The retained status for SCADA (UTF-8 JSON on `{p}/rollout/{id}/status`): counts only, no site list,
 * so its size does not grow with the fleet. `ts` is added at publish time.
 */
export function rolloutStatus(v: RolloutView) {
  const c = (k: SiteStatusName): number => v.counts[k] ?? 0;
  return {
    v: 1 as const,
    rollout: v.id,
    stack: v.stack,
    rev: v.rev,
    state: v.state,
    ...(v.startedAt ? { startedAt: v.startedAt } : {}),
    ...(v.finishedAt ? { finishedAt: v.finishedAt } : {}),
    batch: { index: v.phase, count: v.phaseCount },
    counts: {
      targeted: v.total,
      pending: c('pending') + c('cancelled'),
      inProgress: c('sent') + c('accepted') + c('offline') + c('rolling-back'),
      applied: c('applied'),
      healthy: c('healthy'),
      failed: c('failed') + c('rollback-failed'),
      rolledBack: c('rolled-back'),
      deferred: c('deferred'),
      expired: v.expired,
    },
    ...(v.reason ? { reason: v.reason.slice(0, 256) } : {}),
  };
}

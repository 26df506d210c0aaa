/**
 * Creating a rollout (inside the API's audited transaction): validate the definition against the
 * store (stack, revision, target, conflicts, critical approvals), plan the phases, and record the
 * rollout and its per-site plan. Nothing is sent here: the engine starts the first phase on its next
 * tick. Any refusal throws before a row is written, so an invalid definition changes nothing.
 */
import { randomBytes } from 'node:crypto';
import { resolveTarget, type Target } from '../deploy.js';
import { ApiError } from '../errors.js';
import type { Store } from '../store/index.js';
import { type Definition, normalise, phaseSizes, type RolloutBody } from './definition.js';
import { RolloutError } from './errors.js';
import type { Rollout, RolloutsRepo } from './repo.js';

export function newRolloutId(): string {
  return `r-${randomBytes(8).toString('hex')}`;
}

export interface CreateRolloutOptions {
  readonly actor: string;
  readonly defaultTtlSec: number;
  /** An approver key is configured (critical revisions with `approve: true`). */
  readonly canApprove: boolean;
  /** Called with the resolved sites before anything is written (scope checks). */
  readonly checkSites?: (sites: readonly string[]) => void;
}

export function createRollout(
  store: Store,
  repo: RolloutsRepo,
  b: RolloutBody,
  o: CreateRolloutOptions,
): Rollout {
  const def: Definition = normalise(b, o.defaultTtlSec);
  const info = store.stacks.get(b.stack);
  if (!info) throw new ApiError('unknown-stack', `no stack ${b.stack}`);
  const rev = b.rev ?? info.latestRev;
  const revision = store.stacks.revision(b.stack, rev);
  if (!revision) throw new ApiError('unknown-revision', `no revision ${rev} of ${b.stack}`);
  if (revision.critical.length > 0 && !(def.approve && o.canApprove)) {
    throw new ApiError(
      'approval-required',
      `${b.stack} rev ${rev} is critical (${revision.critical.join('; ')}): an admin must pass approve: true with an approver key configured`,
    );
  }
  const id = b.id ?? newRolloutId();
  if (repo.exists(id)) throw new RolloutError('rollout-exists', `rollout ${id} exists`);
  const sites = resolveTarget(store, b.target as Target);
  o.checkSites?.(sites);
  const conflicts = repo.activeOverlapping(b.stack, sites);
  if (conflicts.length > 0) {
    throw new RolloutError(
      'rollout-conflict',
      `active rollout(s) ${conflicts.join(', ')} of ${b.stack} target some of these sites: abort or finish them first`,
    );
  }
  const pinned = new Map<string, number>();
  for (const s of sites) {
    const p = store.sites.pin(s, b.stack);
    if (p !== undefined && p !== rev) pinned.set(s, p);
  }
  const planned = sites.filter((s) => !pinned.has(s));
  if (planned.length === 0)
    throw new ApiError('empty-target', `every targeted site is pinned to another revision of ${b.stack}`);
  const sizes = phaseSizes(def, planned.length);
  const now = store.now();
  repo.insert({
    id,
    stack: b.stack,
    rev,
    target: { ...b.target },
    def,
    phases: sizes.length,
    createdBy: o.actor,
    now,
  });
  let ord = 0;
  let phase = 0;
  let left = sizes[0]!;
  for (const site of planned) {
    while (left === 0) left = sizes[++phase]!;
    repo.insertSite({ rollout: id, site, ord: ord++, phase, now });
    left--;
  }
  for (const [site, p] of pinned) {
    repo.insertSite({
      rollout: id,
      site,
      ord: ord++,
      phase: null,
      outcome: 'skipped',
      reason: `pinned to ${b.stack}@${p}`,
      now,
    });
  }
  return repo.get(id)!;
}

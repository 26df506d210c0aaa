/**
 * Deployments: a stack revision to a set of sites (explicit ids, a group or a label selector).
 *
 * `stackApplyForSite` is the per-site building block a rollout engine reuses batch by batch: it merges
 * the site's env overrides into the revision's spec, attaches approvals for critical specs and queues
 * the command in the outbox. Pinned sites are skipped unless the requested revision is their pin.
 * Call everything here inside one store transaction, so a deployment commits whole or not at all.
 */
import { randomBytes } from 'node:crypto';
import {
  canonicalSpec,
  decodeSpec,
  type EncodedSpec,
  encodeApproval,
  encodeSpec,
  type Service,
  type Signer,
  type StackSpec,
} from '../../protocol/src/index.js';
import { ApiError } from './errors.js';
import { type CreatedCommand, createCommand } from './outbox/create.js';
import { matches, parseSelector } from './selector.js';
import type { Store } from './store/index.js';
import type { EnvOverride } from './store/sites.js';
import type { Revision } from './store/stacks.js';

export interface Target {
  readonly sites?: string[];
  readonly group?: string;
  readonly selector?: string;
}

/** Resolves a target to enrolled site ids (sorted). Throws for unknown sites or groups and empty targets. */
export function resolveTarget(store: Store, target: Target): string[] {
  const kinds = [target.sites, target.group, target.selector].filter((k) => k !== undefined).length;
  if (kinds !== 1)
    throw new ApiError('bad-target', 'give exactly one of target.sites, target.group, target.selector');
  let ids: string[];
  if (target.sites) {
    const unknown = target.sites.filter((s) => !store.sites.row(s));
    if (unknown.length > 0) {
      throw new ApiError(
        'unknown-site',
        `not enrolled: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? ', ...' : ''}`,
      );
    }
    ids = [...new Set(target.sites)].sort();
  } else if (target.group !== undefined) {
    if (!store.sites.groupExists(target.group))
      throw new ApiError('unknown-group', `no group ${target.group}`);
    ids = store.sites.members(target.group);
  } else {
    const terms = parseSelector(target.selector!);
    ids = store.sites
      .list()
      .filter((s) => matches(s.labels, terms))
      .map((s) => s.id);
  }
  if (ids.length === 0) throw new ApiError('empty-target', 'the target matches no enrolled site');
  return ids;
}

/** Applies per-site env overrides to a spec (overrides for services the spec lacks are ignored). */
export function applyOverride(spec: StackSpec, o: EnvOverride): StackSpec {
  const svc: Record<string, Service> = {};
  for (const [name, s] of Object.entries(spec.svc)) {
    const env = { ...s.env, ...o.env, ...o.services?.[name] };
    svc[name] = Object.keys(env).length > 0 ? { ...s, env } : s;
  }
  return canonicalSpec({ ...spec, svc });
}

export interface ApplyContext {
  readonly store: Store;
  readonly actor: string;
  readonly ttlSec: number;
  readonly now: number;
  /** Signs approvals of critical specs when the caller approved them (admin) and a key is configured. */
  readonly approver?: Signer;
  /** Approvals given with the request (COSE_Sign1 bytes, signed elsewhere). */
  readonly approvals?: readonly Uint8Array[];
  readonly deployment?: string;
  /** Emergency: the agents skip maintenance windows and update locks ([MW-5]). */
  readonly force?: boolean;
}

/** Per-revision memo: the decoded spec, and one approval per spec digest. */
export class RevisionContext {
  private decoded: StackSpec | undefined;
  private readonly approvals = new Map<string, Uint8Array>();
  constructor(readonly revision: Revision) {}

  spec(): StackSpec {
    this.decoded ??= decodeSpec(this.revision.spec, this.revision.z);
    return this.decoded;
  }

  approval(encoded: EncodedSpec, signer: Signer, site: string | undefined, nowSec: number): Uint8Array {
    const key = `${Buffer.from(encoded.digest).toString('hex')}/${site ?? ''}`;
    let a = this.approvals.get(key);
    if (!a) {
      a = encodeApproval(
        {
          v: 1,
          stack: this.revision.stack,
          rev: this.revision.rev,
          dig: encoded.digest,
          ...(site ? { sites: [site] } : {}),
          iat: nowSec,
        },
        signer,
      );
      this.approvals.set(key, a);
    }
    return a;
  }
}

/** Queues a stack.apply of `rc.revision` for one site. */
export function stackApplyForSite(ctx: ApplyContext, rc: RevisionContext, site: string): CreatedCommand {
  const rev = rc.revision;
  const override = ctx.store.sites.override(site, rev.stack);
  const encoded: EncodedSpec = override
    ? encodeSpec(applyOverride(rc.spec(), override))
    : { bytes: rev.spec, z: rev.z, digest: rev.digest };
  let appr: Uint8Array[] | undefined;
  if (rev.critical.length > 0) {
    appr = [...(ctx.approvals ?? [])];
    // A per-site spec (overrides) gets an approval restricted to that site.
    if (ctx.approver)
      appr.push(rc.approval(encoded, ctx.approver, override ? site : undefined, Math.floor(ctx.now / 1000)));
    if (appr.length === 0) {
      throw new ApiError(
        'approval-required',
        `${rev.stack} rev ${rev.rev} is critical (${rev.critical.join('; ')})`,
      );
    }
  }
  return createCommand(
    ctx.store,
    {
      site,
      type: 'stack.apply',
      body: {
        stack: rev.stack,
        rev: rev.rev,
        spec: encoded.bytes,
        ...(encoded.z ? { z: true as const } : {}),
        ...(appr ? { appr } : {}),
        ...(ctx.force ? { force: true as const } : {}),
      },
      rev: rev.rev,
      specDigest: encoded.digest,
      ttlSec: ctx.ttlSec,
      actor: ctx.actor,
      ...(ctx.deployment ? { deployment: ctx.deployment } : {}),
    },
    ctx.now,
  );
}

export interface DeploymentResult {
  readonly id: string;
  readonly stack: string;
  readonly rev: number;
  readonly commands: { site: string; seq: number; superseded: number }[];
  readonly skipped: { site: string; reason: 'pinned'; pinnedRev: number }[];
}

export function newDeploymentId(): string {
  return `d-${randomBytes(8).toString('hex')}`;
}

/** Creates a deployment and its per-site commands. Call inside a transaction. */
export function deploy(
  ctx: Omit<ApplyContext, 'deployment'>,
  revision: Revision,
  sites: readonly string[],
  target: Target,
): DeploymentResult {
  const id = newDeploymentId();
  const rc = new RevisionContext(revision);
  const commands: DeploymentResult['commands'] = [];
  const skipped: DeploymentResult['skipped'] = [];
  const apply = { ...ctx, deployment: id };
  for (const site of sites) {
    const pinned = ctx.store.sites.pin(site, revision.stack);
    if (pinned !== undefined && pinned !== revision.rev) {
      skipped.push({ site, reason: 'pinned', pinnedRev: pinned });
      continue;
    }
    const c = stackApplyForSite(apply, rc, site);
    commands.push({ site, seq: c.seq, superseded: c.superseded });
  }
  ctx.store.deployments.insert({
    id,
    stack: revision.stack,
    rev: revision.rev,
    target: { ...target },
    skipped,
    createdBy: ctx.actor,
    createdAt: ctx.now,
  });
  return { id, stack: revision.stack, rev: revision.rev, commands, skipped };
}

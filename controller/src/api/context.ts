/** What the API routes share: the store, the config, the signing keys and hooks into the outbox. */
import type { Logger } from 'pino';
import type { TrustRoot } from '../../../protocol/src/index.js';
import { digestOf } from '../canonical-json.js';
import type { Config } from '../config.js';
import { ApiError } from '../errors.js';
import type { SigningKeys } from '../signing.js';
import type { Store } from '../store/index.js';
import type { Role, User } from '../store/users.js';

export interface Actor extends Pick<User, 'name' | 'role' | 'groups'> {
  readonly tokenId: string;
}

/** read: any role; operate: operator or admin; admin: admin only. */
export type Access = 'public' | 'read' | 'operate' | 'admin';

declare module 'fastify' {
  interface FastifyRequest {
    actor?: Actor;
  }
  interface FastifyContextConfig {
    /** Audit action name of the route (`site.enrol`); mutating routes must set it. */
    action?: string;
    access?: Access;
  }
}

export interface ApiContext {
  readonly store: Store;
  readonly config: Readonly<Config>;
  readonly signing: SigningKeys;
  readonly log: Logger;
  /** Wakes the publisher (new commands). */
  kick(): void;
  /** Forgets a cached uplink key. */
  invalidateSite(site: string): void;
  /** The trust root document in certsDir, when present. */
  trustRoot(): TrustRoot | undefined;
  stats(): Record<string, unknown>;
  /** Silence after which an online site is reported stale (0: never). */
  readonly staleMs: number;
}

const ROLE_ACCESS: Record<Role, readonly Access[]> = {
  admin: ['public', 'read', 'operate', 'admin'],
  operator: ['public', 'read', 'operate'],
  viewer: ['public', 'read'],
};

export function allows(role: Role, access: Access): boolean {
  return ROLE_ACCESS[role].includes(access);
}

export function allGroups(actor: Actor): boolean {
  return actor.groups.includes('*');
}

/** True when a site with these groups is within the actor's scope. */
export function inScope(actor: Actor, siteGroups: readonly string[]): boolean {
  return allGroups(actor) || siteGroups.some((g) => actor.groups.includes(g));
}

/** Refuses (403 forbidden-scope) unless every site is within the actor's groups. */
export function assertSitesInScope(ctx: ApiContext, actor: Actor, sites: readonly string[]): void {
  if (allGroups(actor)) return;
  const outside = sites.filter((s) => !inScope(actor, ctx.store.sites.groupsOf(s)));
  if (outside.length > 0) {
    throw new ApiError(
      'forbidden-scope',
      `${outside.length} site(s) outside your groups (${actor.groups.join(', ') || 'none'}): ${outside.slice(0, 10).join(', ')}`,
    );
  }
}

export function requireActor(actor: Actor | undefined): Actor {
  if (!actor) throw new ApiError('unauthorized', 'no bearer token');
  return actor;
}

export interface Audited<T> {
  readonly result: T;
  readonly before?: unknown;
  readonly after?: unknown;
  readonly detail?: Record<string, unknown>;
}

/**
 * Runs a mutation and its audit entry in one transaction (I5: the caller answers 2xx only after this
 * returns, i.e. after the commit). A throw rolls both back; the error handler then audits the failure.
 */
export function audited<T>(
  ctx: ApiContext,
  actor: Actor,
  action: string,
  target: string,
  fn: () => Audited<T>,
): T {
  return ctx.store.tx(() => {
    const r = fn();
    ctx.store.audit.append({
      actor: actor.name,
      action,
      target,
      outcome: 'ok',
      before: digestOf(r.before),
      after: digestOf(r.after),
      detail: { token: actor.tokenId, ...r.detail },
    });
    return r.result;
  });
}

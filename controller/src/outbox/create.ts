/**
 * Creating commands in the durable outbox (I1, I4, I5). Call inside the caller's transaction, so the
 * command row, its per-site seq and the audit entry commit together before the API answers 2xx.
 *
 * A command is stored unsigned (`pending`): its `prev` (the seq published to the site just before it)
 * is only known when the publisher issues it, in seq order, into the site's window. A newer command
 * for the same stack collapses older pending ones (`superseded`, never sent): their seqs are never
 * reused and leave no gap, because `prev` links published commands only ([ORD-2]).
 */
import { randomBytes } from 'node:crypto';
import { type CommandBodies, type CommandType, encode } from '../../../protocol/src/index.js';
import type { Store } from '../store/index.js';

export interface CommandRequest<T extends CommandType = CommandType> {
  readonly site: string;
  readonly type: T;
  /** The body; for `heartbeat` the controller fills `last` itself. */
  readonly body: T extends 'heartbeat' ? Record<string, never> : CommandBodies[T];
  readonly ttlSec: number;
  readonly actor: string;
  readonly rev?: number;
  readonly specDigest?: Uint8Array;
  readonly deployment?: string;
}

export interface CreatedCommand {
  readonly site: string;
  readonly seq: number;
  readonly id: Uint8Array;
  /** Older pending commands this one collapsed. */
  readonly superseded: number;
}

/** Which pending commands a new one makes pointless (latest wins, I4). */
function collapses(type: CommandType): readonly CommandType[] {
  switch (type) {
    case 'stack.apply':
    case 'stack.remove':
      return ['stack.apply', 'stack.remove', 'stack.restart'];
    case 'stack.restart':
      return ['stack.restart'];
    case 'state.request':
    case 'heartbeat':
      return [type];
    case 'trust.update':
      return []; // trust roots walk N -> N+1: every step must arrive
  }
}

const GATED = new Set<CommandType>(['stack.apply', 'stack.remove', 'stack.restart']);

/**
 * The body as signed: stack commands carry the site's effective maintenance window (`mw`, [MW-7])
 * unless the caller set one. Rollbacks are stack commands like any other: they wait for the window
 * too, unless forced.
 */
function withMaintenance(store: Store, req: CommandRequest): object {
  const body = req.body as Record<string, unknown>;
  if (!GATED.has(req.type) || body['mw'] !== undefined) return body;
  const eff = store.maintenance.effective(req.site);
  return eff ? { ...body, mw: eff.policy } : body;
}

export function createCommand(store: Store, req: CommandRequest, now: number): CreatedCommand {
  const seq = store.commands.allocSeq(req.site);
  const id = new Uint8Array(randomBytes(16));
  const body = req.type === 'heartbeat' ? { last: seq } : withMaintenance(store, req);
  const stack = 'stack' in body && typeof body.stack === 'string' ? body.stack : undefined;
  store.commands.insert({
    site: req.site,
    seq,
    id,
    type: req.type,
    stack,
    rev: req.rev,
    body: encode(body),
    specDigest: req.specDigest,
    deployment: req.deployment,
    createdAt: now,
    createdBy: req.actor,
    expiresAt: Math.floor(now / 1000) + req.ttlSec,
  });
  const types = collapses(req.type);
  const superseded = types.length
    ? store.commands.supersedePending(req.site, types, stack ?? null, seq, now)
    : 0;
  return { site: req.site, seq, id, superseded };
}

/**
 * The ledger check: every command the controller issued (its database) against every effect each site
 * really had (the MemoryRuntime effect log, which survives SIGKILLs of the agent).
 *
 * Identity: the controller gives each stack revision a new number, and the harness deploys each
 * revision at most once per site, so a container effect `(site, stack, svc, rev)` belongs to exactly
 * one `stack.apply` command `(site, seq)`.
 *
 * - I1 nothing lost: every command answered 2xx exists in the controller's database; after quiescing,
 *   every stack command is final, and `applied` ones have their containers created at the site.
 *   Final-but-not-applied is allowed only as `superseded`, `expired` or `cancelled` (or a `rejected`
 *   whose reason is `expired`); any other rejection or failure of a real command is reported.
 * - I2 at most one effect: each container `(site, stack, svc, rev)` is created at most once and
 *   started at most once (the harness never crashes containers); no container is created for a
 *   command that was not applied, nor for a revision no command carried (I9: nothing forged runs).
 * - I3 order: per site and stack (stacks run concurrently by design, [ORD-5]) containers are created
 *   in the seq order of their commands.
 */
import { readEffectLog } from '../../../agent/src/runtime/memory.js';

export const OPEN_STATUSES: ReadonlySet<string> = new Set(['pending', 'published', 'accepted', 'deferred']);
/** Final statuses that record, rather than lose, a command that had no effect (I1). */
const RECORDED_NO_EFFECT: ReadonlySet<string> = new Set(['superseded', 'expired', 'cancelled']);

export interface LedgerCommand {
  readonly site: string;
  readonly seq: number;
  readonly type: string;
  readonly stack: string | null;
  readonly rev: number | null;
  readonly status: string;
  readonly reason: string | null;
}

export interface LedgerInput {
  readonly commands: readonly LedgerCommand[];
  readonly created: readonly { site: string; seq: number }[];
  readonly sites: readonly { site: string; effectLog: string }[];
}

export interface LedgerReport {
  /** Stack commands in the controller's database. */
  readonly commands: number;
  /** Commands answered 2xx by the API during the run. */
  readonly created: number;
  readonly byStatus: Record<string, number>;
  /** Container effects (create/start/remove/restart) observed at the sites. */
  readonly effects: number;
  readonly creates: number;
  /** I1 violations. */
  readonly losses: string[];
  /** I2 violations. */
  readonly duplicates: string[];
  /** I3 violations. */
  readonly order: string[];
  /** Effects nobody asked for, or effects of commands recorded as not applied. */
  readonly unexpected: string[];
  /** Commands still open (only a violation once the system has quiesced). */
  readonly open: string[];
  readonly ok: boolean;
}

export function checkLedger(input: LedgerInput): LedgerReport {
  const losses: string[] = [];
  const duplicates: string[] = [];
  const order: string[] = [];
  const unexpected: string[] = [];
  const open: string[] = [];
  const byStatus: Record<string, number> = {};
  const key = (site: string, seq: number) => `${site}#${seq}`;
  const bySeq = new Map<string, LedgerCommand>();
  /** site/stack/rev -> command */
  const byRev = new Map<string, LedgerCommand>();
  for (const c of input.commands) {
    bySeq.set(key(c.site, c.seq), c);
    byStatus[c.status] = (byStatus[c.status] ?? 0) + 1;
    if (c.type === 'stack.apply' && c.stack !== null && c.rev !== null) {
      const k = `${c.site}/${c.stack}@${c.rev}`;
      if (byRev.has(k))
        unexpected.push(`${k} deployed twice (seq ${byRev.get(k)!.seq} and ${c.seq}): ledger ambiguous`);
      byRev.set(k, c);
    }
  }

  // I1: every 2xx-created command is in the database.
  for (const c of input.created) {
    if (!bySeq.has(key(c.site, c.seq)))
      losses.push(`${key(c.site, c.seq)}: answered 2xx, not in the controller database`);
  }

  let effects = 0;
  let creates = 0;
  /** site/stack/rev -> services created */
  const createdRevs = new Map<string, Set<string>>();
  for (const { site, effectLog } of input.sites) {
    const log = readEffectLog(effectLog);
    effects += log.length;
    const createCount = new Map<string, number>();
    const startCount = new Map<string, number>();
    const lastSeqByStack = new Map<string, number>();
    for (const e of log) {
      const ctr = `${site}/${e.stack}/${e.svc}@${e.rev}`;
      if (e.op === 'create') {
        creates++;
        createCount.set(ctr, (createCount.get(ctr) ?? 0) + 1);
        const rk = `${site}/${e.stack}@${e.rev}`;
        const svcs = createdRevs.get(rk) ?? new Set<string>();
        createdRevs.set(rk, svcs);
        svcs.add(e.svc);
        const cmd = byRev.get(rk);
        if (!cmd) {
          unexpected.push(`${ctr} created, but no stack.apply carried ${e.stack} rev ${e.rev} to ${site}`);
          continue;
        }
        // I3: per site and stack, creations follow seq order.
        const before = lastSeqByStack.get(e.stack) ?? 0;
        if (cmd.seq < before)
          order.push(`${site}/${e.stack}: rev ${e.rev} (seq ${cmd.seq}) created after seq ${before}`);
        lastSeqByStack.set(e.stack, Math.max(before, cmd.seq));
      } else if (e.op === 'start') {
        startCount.set(ctr, (startCount.get(ctr) ?? 0) + 1);
      }
    }
    for (const [ctr, n] of createCount) if (n > 1) duplicates.push(`${ctr} created ${n} times`);
    for (const [ctr, n] of startCount) if (n > 1) duplicates.push(`${ctr} started ${n} times`);
  }

  for (const c of input.commands) {
    const k = key(c.site, c.seq);
    if (OPEN_STATUSES.has(c.status)) {
      open.push(`${k} ${c.type} ${c.stack ?? ''}@${c.rev ?? ''}: ${c.status}`);
      continue;
    }
    if (c.type !== 'stack.apply' || c.stack === null || c.rev === null) continue;
    const had = createdRevs.get(`${c.site}/${c.stack}@${c.rev}`);
    if (c.status === 'applied') {
      if (!had) losses.push(`${k} ${c.stack}@${c.rev}: recorded applied, but no container of it was created`);
    } else if (RECORDED_NO_EFFECT.has(c.status) || (c.status === 'rejected' && c.reason === 'expired')) {
      if (had)
        unexpected.push(`${k} ${c.stack}@${c.rev}: recorded ${c.status}, but ${[...had].join(',')} created`);
    } else {
      losses.push(`${k} ${c.stack}@${c.rev}: ${c.status}${c.reason ? ` (${c.reason})` : ''}`);
    }
  }

  return {
    commands: input.commands.length,
    created: input.created.length,
    byStatus,
    effects,
    creates,
    losses,
    duplicates,
    order,
    unexpected,
    open,
    ok: losses.length + duplicates.length + order.length + unexpected.length + open.length === 0,
  };
}

/** One line for logs and reports. */
export function summarise(r: LedgerReport): string {
  const st = Object.entries(r.byStatus)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return (
    `commands ${r.commands} (2xx ${r.created}; ${st}), effects ${r.effects} (creates ${r.creates}), ` +
    `losses ${r.losses.length}, duplicates ${r.duplicates.length}, order ${r.order.length}, ` +
    `unexpected ${r.unexpected.length}, open ${r.open.length}`
  );
}

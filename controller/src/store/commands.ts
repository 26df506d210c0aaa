/** Command rows (the durable outbox) and the acks received for them. */
import { cachedPrepare, type Db, type Prepare } from './db.js';

export const COMMAND_STATUSES = [
  'pending',
  'published',
  'accepted',
  'deferred',
  'applied',
  'failed',
  'rejected',
  'superseded',
  'rolled-back',
  'expired',
  'cancelled',
] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

/** Statuses after which nothing more happens to a command. */
export const FINAL_STATUSES: ReadonlySet<CommandStatus> = new Set([
  'applied',
  'failed',
  'rejected',
  'superseded',
  'rolled-back',
  'expired',
  'cancelled',
]);

export interface CommandRow {
  site: string;
  seq: number;
  id: Buffer;
  type: string;
  stack: string | null;
  rev: number | null;
  body: Buffer;
  spec_digest: Buffer | null;
  deployment: string | null;
  status: CommandStatus;
  reason: string | null;
  prev: number | null;
  envelope: Buffer | null;
  ref: Buffer | null;
  created_at: number;
  created_by: string;
  expires_at: number;
  issued_at: number | null;
  last_sent_at: number | null;
  next_send_at: number | null;
  attempts: number;
  acked_at: number | null;
  done_at: number | null;
  superseded_by: number | null;
}

/** The listing columns (no body, no envelope). */
const SUMMARY = `site, seq, id, type, stack, rev, spec_digest, deployment, status, reason, prev, ref, created_at,
  created_by, expires_at, issued_at, last_sent_at, next_send_at, attempts, acked_at, done_at, superseded_by`;
export type CommandSummary = Omit<CommandRow, 'body' | 'envelope'>;

export interface AckRow {
  n: number;
  site: string;
  useq: number;
  at: number;
  st: string;
  seq: number | null;
  cmd_id: Buffer | null;
  ref: Buffer | null;
  rc: string | null;
  msg: string | null;
  type: string | null;
  stack: string | null;
  rev: number | null;
  matched: number | null;
  received_at: number;
}

export interface NewCommand {
  site: string;
  seq: number;
  id: Uint8Array;
  type: string;
  stack?: string | undefined;
  rev?: number | undefined;
  body: Uint8Array;
  specDigest?: Uint8Array | undefined;
  deployment?: string | undefined;
  createdAt: number;
  createdBy: string;
  expiresAt: number;
}

/** `WHERE` clause and named parameters for the defined filters (`'seq <'` compares, others are equal). */
function filters(f: Record<string, string | number | undefined>): {
  where: string;
  params: Record<string, unknown>;
} {
  const clauses: string[] = [];
  const params: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(f)) {
    if (v === undefined) continue;
    const [col, op = '='] = k.split(' ');
    clauses.push(`${col} ${op} @${col}`);
    params[col!] = v;
  }
  return { where: clauses.length ? `WHERE ${clauses.join(' AND ')}` : '', params };
}

export class CommandsRepo {
  private readonly allocStmt;
  private readonly insertStmt;
  private readonly getStmt;
  private readonly getSummary;

  private readonly prepare: Prepare;

  constructor(db: Db) {
    this.prepare = cachedPrepare(db);
    this.allocStmt = db.prepare<[string], { seq_alloc: number }>(
      'UPDATE sites SET seq_alloc = seq_alloc + 1 WHERE id = ? RETURNING seq_alloc',
    );
    this.insertStmt = db.prepare(
      `INSERT INTO commands (site, seq, id, type, stack, rev, body, spec_digest, deployment, status, created_at,
         created_by, expires_at)
       VALUES (@site, @seq, @id, @type, @stack, @rev, @body, @specDigest, @deployment, 'pending', @createdAt,
         @createdBy, @expiresAt)`,
    );
    this.getStmt = db.prepare<[string, number], CommandRow>(
      'SELECT * FROM commands WHERE site = ? AND seq = ?',
    );
    this.getSummary = db.prepare<[string, number], CommandSummary>(
      `SELECT ${SUMMARY} FROM commands WHERE site = ? AND seq = ?`,
    );
  }

  /** Allocates the next seq of a site (never reused, even if the command is later collapsed). */
  allocSeq(site: string): number {
    const r = this.allocStmt.get(site);
    if (!r) throw new Error(`allocSeq: no site ${site}`);
    return r.seq_alloc;
  }

  insert(c: NewCommand): void {
    this.insertStmt.run({
      ...c,
      id: Buffer.from(c.id),
      body: Buffer.from(c.body),
      stack: c.stack ?? null,
      rev: c.rev ?? null,
      specDigest: c.specDigest ? Buffer.from(c.specDigest) : null,
      deployment: c.deployment ?? null,
    });
  }

  get(site: string, seq: number): CommandRow | undefined {
    return this.getStmt.get(site, seq);
  }

  summary(site: string, seq: number): CommandSummary | undefined {
    return this.getSummary.get(site, seq);
  }

  byRef(site: string, ref: Uint8Array): CommandSummary | undefined {
    return this.prepare<[string, Buffer], CommandSummary>(
      `SELECT ${SUMMARY} FROM commands WHERE site = ? AND ref = ?`,
    ).get(site, Buffer.from(ref));
  }

  list(
    site: string,
    opts: { status?: string; type?: string; before?: number; limit: number },
  ): CommandSummary[] {
    const { where, params } = filters({ site, status: opts.status, type: opts.type, 'seq <': opts.before });
    return this.prepare<Record<string, unknown>, CommandSummary>(
      `SELECT ${SUMMARY} FROM commands ${where} ORDER BY seq DESC LIMIT @limit`,
    ).all({ ...params, limit: opts.limit });
  }

  byDeployment(id: string): CommandSummary[] {
    return this.prepare<[string], CommandSummary>(
      `SELECT ${SUMMARY} FROM commands WHERE deployment = ? ORDER BY site, seq`,
    ).all(id);
  }

  /** Collapses pending (never published) commands of a stack at a site into `bySeq` (I4). */
  supersedePending(
    site: string,
    types: readonly string[],
    stack: string | null,
    bySeq: number,
    now: number,
  ): number {
    const marks = types.map(() => '?').join(',');
    return this.prepare(
      `UPDATE commands SET status = 'superseded', superseded_by = ?, done_at = ?
         WHERE site = ? AND status = 'pending' AND seq < ? AND type IN (${marks}) AND stack IS ?`,
    ).run(bySeq, now, site, bySeq, ...types, stack).changes;
  }

  /** Cancels a pending command; false when it is not pending (already published or final). */
  cancel(site: string, seq: number, now: number): boolean {
    return (
      this.prepare(
        `UPDATE commands SET status = 'cancelled', done_at = ? WHERE site = ? AND seq = ? AND status = 'pending'`,
      ).run(now, site, seq).changes > 0
    );
  }

  /** Marks pending commands past their expiry as expired; they are never sent. */
  expirePending(nowSec: number, now: number): { site: string; seq: number }[] {
    return this.prepare<[number, number], { site: string; seq: number }>(
      `UPDATE commands SET status = 'expired', reason = 'expired', done_at = ?
         WHERE status = 'pending' AND expires_at <= ? RETURNING site, seq`,
    ).all(now, nowSec);
  }

  /** Pending commands in (site, seq) order. */
  pending(): { site: string; seq: number }[] {
    return this.prepare<[], { site: string; seq: number }>(
      `SELECT site, seq FROM commands WHERE status = 'pending' ORDER BY site, seq`,
    ).all();
  }

  /** Published commands without an accepted or final ack, per site (the window of I4). */
  inflightCounts(): Map<string, number> {
    const rows = this.prepare<[], { site: string; n: number }>(
      `SELECT site, COUNT(*) AS n FROM commands WHERE status = 'published' GROUP BY site`,
    ).all();
    return new Map(rows.map((r) => [r.site, r.n]));
  }

  /** Sites with nothing pending or in flight (candidates for a heartbeat). */
  idleSitesIssuedBefore(t: number): string[] {
    return this.prepare<[number], { id: string }>(
      `SELECT id FROM sites WHERE COALESCE(issued_at, 0) <= ? AND NOT EXISTS (
           SELECT 1 FROM commands c WHERE c.site = sites.id AND c.status IN ('pending', 'published'))`,
    )
      .all(t)
      .map((r) => r.id);
  }

  /** Deletes heartbeats of a site that are older than `keepSeq` and done (they carry no history). */
  pruneHeartbeats(site: string, keepSeq: number): void {
    this.prepare(
      `DELETE FROM commands WHERE site = ? AND type = 'heartbeat' AND seq < ?
         AND status NOT IN ('pending', 'published')`,
    ).run(site, keepSeq);
  }

  /** Commits a signed envelope as `published`; `lease` is when the resend sweep may first pick it up. */
  markIssued(
    site: string,
    seq: number,
    f: { prev: number; envelope: Uint8Array; ref: Uint8Array; now: number; lease: number },
  ): void {
    this.prepare(
      `UPDATE commands SET status = 'published', prev = ?, envelope = ?, ref = ?, issued_at = ?, next_send_at = ?
         WHERE site = ? AND seq = ? AND status = 'pending'`,
    ).run(f.prev, Buffer.from(f.envelope), Buffer.from(f.ref), f.now, f.lease, site, seq);
    this.prepare('UPDATE sites SET seq_issued = ?, issued_at = ? WHERE id = ?').run(seq, f.now, site);
  }

  /**
   * Commands due for a (re)send: published ones whose lease or retry time has passed, and accepted or
   * deferred ones due for a poll of their final ack ([OUT-5]); at sites not known to be offline (or
   * never sent). At most `limit`, oldest first.
   */
  due(now: number, limit: number): { site: string; seq: number; envelope: Buffer; attempts: number }[] {
    return this.prepare<[number, number], { site: string; seq: number; envelope: Buffer; attempts: number }>(
      `SELECT c.site, c.seq, c.envelope, c.attempts FROM commands c JOIN sites s ON s.id = c.site
         WHERE c.status IN ('published', 'accepted', 'deferred') AND c.next_send_at <= ?
           AND (c.attempts = 0 OR s.online IS NULL OR s.online = 1)
         ORDER BY c.next_send_at, c.site, c.seq LIMIT ?`,
    ).all(now, limit);
  }

  /** At start: published commands never recorded as sent (a crash before their PUBACK) are due now. */
  resetUnsent(): void {
    this.prepare(`UPDATE commands SET next_send_at = 0 WHERE status = 'published' AND attempts = 0`).run();
  }

  /**
   * At start: accepted and deferred commands are polled within `spreadMs` instead of at their next
   * `pollMs`. Ingest PUBACKs an ack before its batch commits ([OUT-8]), so a crash may have lost a final
   * ack that the broker will never deliver again; the agent re-acks the poll with its recorded status.
   * Returns how many were brought forward.
   */
  pollOpenAtStart(now: number, spreadMs: number): number {
    return this.prepare(
      `UPDATE commands SET next_send_at = MIN(COALESCE(next_send_at, ?), ? + (abs(random()) % ?))
       WHERE status IN ('accepted', 'deferred')`,
    ).run(now + spreadMs, now, Math.max(1, spreadMs)).changes;
  }

  /** Records a PUBACKed send: the next resend at `retryAt` while published, the next poll at `pollAt` once accepted. */
  recordSent(site: string, seq: number, now: number, retryAt: number, pollAt: number): void {
    this.prepare(
      `UPDATE commands SET attempts = attempts + 1, last_sent_at = ?,
         next_send_at = CASE WHEN status = 'published' THEN ? ELSE ? END
       WHERE site = ? AND seq = ? AND status IN ('published', 'accepted', 'deferred')`,
    ).run(now, retryAt, pollAt, site, seq);
  }

  /** After a site comes back online, retry its unacknowledged commands soon (not at the backed-off time). */
  rescheduleSite(site: string, at: number): void {
    this.prepare(
      `UPDATE commands SET next_send_at = MIN(next_send_at, ?) WHERE site = ? AND status = 'published'`,
    ).run(at, site);
  }

  /** Moves a command to `status`; `nextSendAt` reschedules its next (re)send or poll. */
  setStatus(
    site: string,
    seq: number,
    status: CommandStatus,
    reason: string | null,
    now: number,
    nextSendAt?: number,
  ): void {
    const final = FINAL_STATUSES.has(status);
    this.prepare(
      `UPDATE commands SET status = ?, reason = COALESCE(?, reason), acked_at = COALESCE(acked_at, ?),
         done_at = CASE WHEN ? THEN ? ELSE done_at END, next_send_at = COALESCE(?, next_send_at)
       WHERE site = ? AND seq = ?`,
    ).run(status, reason, now, final ? 1 : 0, now, nextSendAt ?? null, site, seq);
  }

  counts(): Record<string, number> {
    const rows = this.prepare<[], { status: string; n: number }>(
      'SELECT status, COUNT(*) AS n FROM commands GROUP BY status',
    ).all();
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  // ---- acks -----------------------------------------------------------------------------------

  insertAck(a: Omit<AckRow, 'n'>): boolean {
    return (
      this.prepare(
        `INSERT OR IGNORE INTO acks (site, useq, at, st, seq, cmd_id, ref, rc, msg, type, stack, rev, matched,
             received_at)
           VALUES (@site, @useq, @at, @st, @seq, @cmd_id, @ref, @rc, @msg, @type, @stack, @rev, @matched,
             @received_at)`,
      ).run(a).changes > 0
    );
  }

  acks(opts: { site?: string; seq?: number; before?: number; limit: number }): AckRow[] {
    const { where, params } = filters({ site: opts.site, seq: opts.seq, 'n <': opts.before });
    return this.prepare<Record<string, unknown>, AckRow>(
      `SELECT * FROM acks ${where} ORDER BY n DESC LIMIT @limit`,
    ).all({ ...params, limit: opts.limit });
  }
}

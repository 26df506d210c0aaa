/**
 * Typed access to the agent database (journal, desired stacks, meta, alarms). Plain data in, plain
 * data out; every multi-row change runs inside `tx()` so a crash leaves either all of it or none.
 * The outbox has its own module (outbox.ts).
 */
import type { AckStatus, AlarmCode } from '../../../protocol/src/index.js';
import type { Db, JournalStatus } from './db.js';

export interface JournalRow {
  readonly seq: number;
  readonly id: Uint8Array;
  readonly prev: number;
  readonly type: string;
  readonly stack: string | null;
  readonly rev: number | null;
  readonly status: JournalStatus;
  readonly envelope: Uint8Array;
  readonly received_at: number;
  readonly started_at: number | null;
  readonly finished_at: number | null;
  /** The last ack status sent for this command (re-sent on a duplicate delivery: I2). */
  readonly ack_st: AckStatus;
  readonly rc: string | null;
  readonly detail: string | null;
}

export interface DesiredRow {
  readonly name: string;
  readonly rev: number;
  readonly spec: Uint8Array;
  readonly z: number;
  readonly digest: string;
  readonly critical: number;
  readonly seq: number;
  readonly prev_rev: number | null;
  readonly prev_spec: Uint8Array | null;
  readonly prev_z: number | null;
  readonly prev_digest: string | null;
  readonly updated_at: number;
}

export interface AlarmRow {
  readonly code: AlarmCode;
  readonly stack: string;
  /** Unix seconds. */
  readonly since: number;
  readonly msg: string | null;
}

/** Meta keys (one place). */
export const META = {
  /** Highest seq such that the chain of `prev` links up to it has been received (or passed: [ORD-3]). */
  contig: 'contig',
  /** Highest seq such that every journalled command at or below it is finished. */
  applied: 'applied',
  /** Trusted-time floor, seconds ([TIME-1]). */
  timeFloor: 'time_floor',
  trustRoot: 'trust_root',
  trustVer: 'trust_ver',
  /** Last uplink sequence number used ([ACK-2]). */
  useq: 'useq',
  /** ms: last verified command of any type from the controller. */
  lastContact: 'last_contact',
  /** ms: last verified heartbeat. */
  lastHeartbeat: 'last_heartbeat',
  /** Outbox entries dropped by coalescing or the byte cap (I8). */
  drops: 'drops',
  boots: 'boots',
  site: 'site',
  /** JSON of the last merged stack view (StackState[]) and when it was taken: for `agent status`. */
  lastView: 'last_view',
  lastViewAt: 'last_view_at',
} as const;

export class AgentStore {
  private readonly q;

  constructor(readonly db: Db) {
    this.q = {
      metaGet: db.prepare<[string], { value: unknown }>('SELECT value FROM meta WHERE key = ?'),
      metaSet: db.prepare<[string, unknown]>(
        'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
      ),
      jBySeq: db.prepare<[number], JournalRow>('SELECT * FROM journal WHERE seq = ?'),
      jById: db.prepare<[Uint8Array], JournalRow>('SELECT * FROM journal WHERE id = ?'),
      jInsert: db.prepare(
        `INSERT INTO journal (seq, id, prev, type, stack, rev, status, envelope, received_at, ack_st, rc, detail)
         VALUES (@seq, @id, @prev, @type, @stack, @rev, @status, @envelope, @received_at, @ack_st, @rc, @detail)`,
      ),
      jStart: db.prepare<[number, number]>(
        "UPDATE journal SET status = 'executing', started_at = ? WHERE seq = ?",
      ),
      jFinish: db.prepare(
        `UPDATE journal SET status = @status, finished_at = @at, ack_st = @ack_st, rc = @rc, detail = @detail
         WHERE seq = @seq`,
      ),
      jDefer: db.prepare<[string, string, number]>(
        "UPDATE journal SET status = 'deferred', ack_st = 'deferred', rc = ?, detail = ? WHERE seq = ?",
      ),
      jOpen: db.prepare<[], JournalRow>(
        "SELECT * FROM journal WHERE status IN ('received', 'executing', 'deferred') ORDER BY seq",
      ),
      jAbove: db.prepare<[number], { seq: number; prev: number; status: JournalStatus }>(
        'SELECT seq, prev, status FROM journal WHERE seq > ? ORDER BY seq',
      ),
      jMinOpen: db.prepare<[], { m: number | null }>(
        "SELECT MIN(seq) AS m FROM journal WHERE status IN ('received', 'executing', 'deferred')",
      ),
      jMax: db.prepare<[], { m: number | null }>('SELECT MAX(seq) AS m FROM journal'),
      jCounts: db.prepare<[], { status: JournalStatus; n: number }>(
        'SELECT status, COUNT(*) AS n FROM journal GROUP BY status',
      ),
      jPrune: db.prepare<[number, number]>(
        `DELETE FROM journal WHERE seq <= ? AND status NOT IN ('received', 'executing', 'deferred') AND seq NOT IN
           (SELECT seq FROM journal ORDER BY seq DESC LIMIT ?)`,
      ),
      jRecent: db.prepare<[number], JournalRow>('SELECT * FROM journal ORDER BY seq DESC LIMIT ?'),
      dAll: db.prepare<[], DesiredRow>('SELECT * FROM desired ORDER BY name'),
      dGet: db.prepare<[string], DesiredRow>('SELECT * FROM desired WHERE name = ?'),
      dPut: db.prepare(
        `INSERT INTO desired (name, rev, spec, z, digest, critical, seq, prev_rev, prev_spec, prev_z, prev_digest, updated_at)
         VALUES (@name, @rev, @spec, @z, @digest, @critical, @seq, @prev_rev, @prev_spec, @prev_z, @prev_digest, @updated_at)
         ON CONFLICT(name) DO UPDATE SET rev = excluded.rev, spec = excluded.spec, z = excluded.z,
           digest = excluded.digest, critical = excluded.critical, seq = excluded.seq,
           prev_rev = excluded.prev_rev, prev_spec = excluded.prev_spec, prev_z = excluded.prev_z,
           prev_digest = excluded.prev_digest, updated_at = excluded.updated_at`,
      ),
      dDel: db.prepare<[string]>('DELETE FROM desired WHERE name = ?'),
      aList: db.prepare<[], AlarmRow>('SELECT * FROM alarms ORDER BY since, code, stack'),
      aGet: db.prepare<[string, string], AlarmRow>('SELECT * FROM alarms WHERE code = ? AND stack = ?'),
      aPut: db.prepare<[string, string, number, string | null]>(
        `INSERT INTO alarms (code, stack, since, msg) VALUES (?, ?, ?, ?)
         ON CONFLICT(code, stack) DO UPDATE SET msg = excluded.msg`,
      ),
      aDel: db.prepare<[string, string]>('DELETE FROM alarms WHERE code = ? AND stack = ?'),
    };
  }

  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ---- meta -------------------------------------------------------------------------------------

  metaInt(key: string, def = 0): number {
    const v = this.q.metaGet.get(key)?.value;
    return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : def;
  }

  metaBlob(key: string): Uint8Array | undefined {
    const v = this.q.metaGet.get(key)?.value;
    return v instanceof Uint8Array ? new Uint8Array(v) : undefined;
  }

  metaText(key: string): string | undefined {
    const v = this.q.metaGet.get(key)?.value;
    return typeof v === 'string' ? v : undefined;
  }

  setMeta(key: string, value: number | string | Uint8Array): void {
    this.q.metaSet.run(key, value);
  }

  /** Reserves the next uplink sequence number (persisted; call inside the tx that uses it). */
  nextUseq(): number {
    const n = this.metaInt(META.useq) + 1;
    this.setMeta(META.useq, n);
    return n;
  }

  // ---- journal ----------------------------------------------------------------------------------

  journalBySeq(seq: number): JournalRow | undefined {
    return this.q.jBySeq.get(seq);
  }

  journalById(id: Uint8Array): JournalRow | undefined {
    return this.q.jById.get(id);
  }

  insertJournal(row: Omit<JournalRow, 'started_at' | 'finished_at'>): void {
    this.q.jInsert.run(row);
  }

  markExecuting(seq: number, atMs: number): void {
    this.q.jStart.run(atMs, seq);
  }

  finish(
    seq: number,
    status: JournalStatus,
    ackSt: AckStatus,
    atMs: number,
    rc?: string,
    detail?: string,
  ): void {
    this.q.jFinish.run({ seq, status, at: atMs, ack_st: ackSt, rc: rc ?? null, detail: detail ?? null });
  }

  /** A command waiting for its maintenance window or an update lock ([MW-4]); still open. */
  defer(seq: number, rc: string, detail: string): void {
    this.q.jDefer.run(rc, detail, seq);
  }

  /** Commands not finished (received, deferred or executing), by seq. */
  openJournal(): JournalRow[] {
    return this.q.jOpen.all();
  }

  journalAbove(seq: number): { seq: number; prev: number; status: JournalStatus }[] {
    return this.q.jAbove.all(seq);
  }

  minOpenSeq(): number | undefined {
    return this.q.jMinOpen.get()?.m ?? undefined;
  }

  maxSeq(): number {
    return this.q.jMax.get()?.m ?? 0;
  }

  journalCounts(): Record<string, number> {
    return Object.fromEntries(this.q.jCounts.all().map((r) => [r.status, r.n]));
  }

  recentJournal(limit: number): JournalRow[] {
    return this.q.jRecent.all(limit);
  }

  /** Deletes finished entries at or below `upTo`, keeping the newest `keep` rows. */
  pruneJournal(upTo: number, keep: number): number {
    return this.q.jPrune.run(upTo, keep).changes;
  }

  // ---- desired stacks ---------------------------------------------------------------------------

  desiredAll(): DesiredRow[] {
    return this.q.dAll.all();
  }

  desired(name: string): DesiredRow | undefined {
    return this.q.dGet.get(name);
  }

  putDesired(row: DesiredRow): void {
    this.q.dPut.run(row);
  }

  deleteDesired(name: string): void {
    this.q.dDel.run(name);
  }

  // ---- alarms -----------------------------------------------------------------------------------

  alarms(): AlarmRow[] {
    return this.q.aList.all();
  }

  /** Raises (or updates the message of) an alarm; returns true when it was not raised before. */
  raiseAlarm(code: AlarmCode, sinceSec: number, msg?: string, stack = ''): boolean {
    const existed = this.q.aGet.get(code, stack) !== undefined;
    this.q.aPut.run(code, stack, sinceSec, msg ?? null);
    return !existed;
  }

  /** Clears an alarm; returns true when it was raised. */
  clearAlarm(code: AlarmCode, stack = ''): boolean {
    return this.q.aDel.run(code, stack).changes > 0;
  }
}

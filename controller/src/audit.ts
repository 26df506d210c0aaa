/**
 * Append-only, hash-chained audit log (DESIGN §5). Every mutating API call and every refusal lands
 * here, in the same transaction as the change it records.
 *
 * Entry hash = sha256(canonical JSON of {seq, at, actor, action, target, outcome, before, after,
 * detail, prev}), where `prev` is the previous entry's hash (64 zeros for the first). `before` and
 * `after` are digests of the changed resource (see `digestOf`), never the resource itself, so the log
 * holds no secrets. Triggers refuse UPDATE and DELETE; `verifyChain` detects anyone who goes around them.
 */
import type { Writable } from 'node:stream';
import { canonicalJson, sha256Hex } from './canonical-json.js';
import type { Db } from './store/db.js';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditInput {
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  /** `ok`, `denied:<code>` or `failed:<code>`. */
  readonly outcome: string;
  readonly before?: string | null;
  readonly after?: string | null;
  /** Small structured context (ids, counts); never payloads, tokens or keys. */
  readonly detail?: Record<string, unknown> | null;
}

export interface AuditEntry {
  readonly seq: number;
  readonly at: string;
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly outcome: string;
  readonly before: string | null;
  readonly after: string | null;
  readonly detail: Record<string, unknown> | null;
  readonly prev: string;
  readonly hash: string;
}

interface AuditRow {
  seq: number;
  at: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  before: string | null;
  after: string | null;
  detail: string | null;
  prev: string;
  hash: string;
}

export function entryHash(e: Omit<AuditEntry, 'hash'>): string {
  return sha256Hex(
    canonicalJson({
      seq: e.seq,
      at: e.at,
      actor: e.actor,
      action: e.action,
      target: e.target,
      outcome: e.outcome,
      before: e.before,
      after: e.after,
      detail: e.detail,
      prev: e.prev,
    }),
  );
}

function fromRow(r: AuditRow): AuditEntry {
  let detail: Record<string, unknown> | null = null;
  if (r.detail !== null) {
    try {
      detail = JSON.parse(r.detail) as Record<string, unknown>;
    } catch {
      detail = { unparseable: r.detail };
    }
  }
  return { ...r, detail };
}

export class AuditLog {
  private readonly last;
  private readonly insert;
  private readonly page;

  constructor(
    db: Db,
    private readonly now: () => number = Date.now,
  ) {
    this.last = db.prepare<[], { seq: number; hash: string }>(
      'SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1',
    );
    this.insert = db.prepare(
      `INSERT INTO audit (seq, at, actor, action, target, outcome, before, after, detail, prev, hash)
       VALUES (@seq, @at, @actor, @action, @target, @outcome, @before, @after, @detail, @prev, @hash)`,
    );
    this.page = db.prepare<[number, number], AuditRow>(
      'SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?',
    );
  }

  /** Appends one entry. Call inside the transaction of the change it records. */
  append(input: AuditInput): AuditEntry {
    const head = this.last.get();
    const base = {
      seq: (head?.seq ?? 0) + 1,
      at: new Date(this.now()).toISOString(),
      actor: input.actor,
      action: input.action,
      target: input.target,
      outcome: input.outcome,
      before: input.before ?? null,
      after: input.after ?? null,
      detail: input.detail ?? null,
      prev: head?.hash ?? GENESIS_HASH,
    };
    const entry: AuditEntry = { ...base, hash: entryHash(base) };
    this.insert.run({ ...entry, detail: entry.detail === null ? null : JSON.stringify(entry.detail) });
    return entry;
  }

  list(after: number, limit: number): AuditEntry[] {
    return this.page.all(after, limit).map(fromRow);
  }
}

export interface VerifyResult {
  readonly ok: boolean;
  /** Number of entries checked. */
  readonly entries: number;
  /** The first entry that does not verify (its hash, its link or its seq is wrong). */
  readonly badRow?: number;
  readonly reason?: string;
  /** Hash of the last entry (to anchor elsewhere). */
  readonly head: string;
}

/** Walks the whole chain in seq order. Stops at the first broken entry and names it. */
export function verifyChain(db: Db): VerifyResult {
  let prev = GENESIS_HASH;
  let expectSeq = 1;
  let entries = 0;
  for (const row of db.prepare<[], AuditRow>('SELECT * FROM audit ORDER BY seq').iterate()) {
    const e = fromRow(row);
    const bad = (reason: string): VerifyResult => ({ ok: false, entries, badRow: e.seq, reason, head: prev });
    if (e.seq !== expectSeq) return bad(`expected seq ${expectSeq}: an entry is missing`);
    if (e.prev !== prev) return bad('prev does not match the hash of the previous entry');
    if (entryHash(e) !== e.hash) return bad('hash does not match the entry content');
    prev = e.hash;
    expectSeq++;
    entries++;
  }
  return { ok: true, entries, head: prev };
}

export type AuditFormat = 'jsonl' | 'csv';
const CSV_COLUMNS = [
  'seq',
  'at',
  'actor',
  'action',
  'target',
  'outcome',
  'before',
  'after',
  'detail',
  'prev',
  'hash',
] as const;

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** Formats one entry as a JSON line or a CSV row (RFC 4180 quoting), with the line end. */
export function formatEntry(e: AuditEntry, format: AuditFormat): string {
  if (format === 'jsonl') return `${JSON.stringify(e)}\n`;
  return `${CSV_COLUMNS.map((c) => csvCell(e[c])).join(',')}\r\n`;
}

export function csvHeader(): string {
  return `${CSV_COLUMNS.join(',')}\r\n`;
}

/**
 * Streams the whole log to `out`, a page at a time (no statement stays open across an await, so the
 * API can export while it keeps serving). Returns the number of entries written.
 */
export async function exportAudit(db: Db, format: AuditFormat, out: Writable): Promise<number> {
  const write = (s: string): Promise<void> =>
    out.write(s) ? Promise.resolve() : new Promise((resolve) => out.once('drain', () => resolve()));
  const page = db.prepare<[number, number], AuditRow>(
    'SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?',
  );
  if (format === 'csv') await write(csvHeader());
  let n = 0;
  let after = 0;
  for (;;) {
    const rows = page.all(after, 1000);
    if (rows.length === 0) return n;
    await write(rows.map((r) => formatEntry(fromRow(r), format)).join(''));
    n += rows.length;
    after = rows[rows.length - 1]!.seq;
  }
}

/**
 * Read-only queries of the controller's SQLite database (WAL: safe while the controller runs, and
 * readable after it was killed). The fault suite's source of truth for what was issued (I1).
 */
import Database from 'better-sqlite3';

export interface CommandRow {
  site: string;
  seq: number;
  type: string;
  stack: string | null;
  rev: number | null;
  status: string;
  reason: string | null;
  attempts: number;
}

export const STACK_COMMANDS = "type IN ('stack.apply', 'stack.remove', 'stack.restart')";

function withDb<T>(path: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    return fn(db);
  } finally {
    db.close();
  }
}

/** Commands matching `where` (SQL over the commands table), in (site, seq) order. */
export function readCommands(path: string, where = STACK_COMMANDS): CommandRow[] {
  return withDb(
    path,
    (db) =>
      db
        .prepare(
          `SELECT site, seq, type, stack, rev, status, reason, attempts FROM commands WHERE ${where} ORDER BY site, seq`,
        )
        .all() as CommandRow[],
  );
}

/** The signed envelope committed for (site, seq). */
export function readEnvelope(path: string, site: string, seq: number): Uint8Array {
  return withDb(path, (db) => {
    const row = db.prepare('SELECT envelope FROM commands WHERE site = ? AND seq = ?').get(site, seq) as
      | { envelope: Buffer | null }
      | undefined;
    if (!row?.envelope) throw new Error(`no envelope for ${site}#${seq}`);
    return new Uint8Array(row.envelope);
  });
}

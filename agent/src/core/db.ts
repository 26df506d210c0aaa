/**
 * The agent's SQLite database: WAL, synchronous=FULL (a PUBACK depends on these writes: I5),
 * migrations by PRAGMA user_version.
 *
 * A database that cannot be opened or fails `quick_check` at boot is quarantined (renamed with a
 * timestamp, with its -wal/-shm files) and a clean one is created; the caller then starts from the
 * provisioned trust root, raises `db-corrupt` and publishes a full state so the controller resyncs.
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';

export type Db = Database.Database;

/** Journal statuses (the `status` column). */
export const JOURNAL_STATUSES = [
  'received',
  'executing',
  'done',
  'failed',
  'rejected',
  'superseded',
  'deferred',
] as const;
export type JournalStatus = (typeof JOURNAL_STATUSES)[number];

const MIGRATIONS: readonly string[] = [
  // v1
  `
  CREATE TABLE journal (
    seq          INTEGER PRIMARY KEY,
    id           BLOB    NOT NULL UNIQUE,
    prev         INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    stack        TEXT,
    rev          INTEGER,
    status       TEXT    NOT NULL CHECK (status IN (${JOURNAL_STATUSES.map((s) => `'${s}'`).join(',')})),
    envelope     BLOB    NOT NULL,
    received_at  INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    ack_st       TEXT    NOT NULL,
    rc           TEXT,
    detail       TEXT
  );
  CREATE INDEX journal_pending ON journal(status) WHERE status IN ('received', 'executing');
  CREATE TABLE desired (
    name         TEXT    PRIMARY KEY,
    rev          INTEGER NOT NULL,
    spec         BLOB    NOT NULL,
    z            INTEGER NOT NULL,
    digest       TEXT    NOT NULL,
    critical     INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    prev_rev     INTEGER,
    prev_spec    BLOB,
    prev_z       INTEGER,
    prev_digest  TEXT,
    updated_at   INTEGER NOT NULL
  );
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
  ) STRICT;
  CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL CHECK (kind IN ('ack', 'state', 'status')),
    full        INTEGER NOT NULL DEFAULT 0,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    retain      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
  );
  CREATE TABLE alarms (
    code   TEXT    NOT NULL,
    stack  TEXT    NOT NULL DEFAULT '',
    since  INTEGER NOT NULL,
    msg    TEXT,
    PRIMARY KEY (code, stack)
  );
  `,
  // v2: deferred commands ([MW-4]) are open too
  `
  DROP INDEX journal_pending;
  CREATE INDEX journal_pending ON journal(status) WHERE status IN ('received', 'executing', 'deferred');
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    typeof code === 'string' &&
    (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB' || code === 'AGENT_DB_CORRUPT')
  );
}

function configure(db: Db): void {
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  const check = db.pragma('quick_check', { simple: true });
  if (check !== 'ok') {
    throw Object.assign(new Error(`quick_check: ${String(check)}`), { code: 'AGENT_DB_CORRUPT' });
  }
}

/** Applies pending migrations, each in its own transaction. */
export function migrate(db: Db): number {
  const from = db.pragma('user_version', { simple: true }) as number;
  if (from > MIGRATIONS.length) {
    throw new Error(`database schema v${from} is newer than this agent (v${MIGRATIONS.length})`);
  }
  for (let v = from; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return from;
}

export interface OpenedDb {
  readonly db: Db;
  /** Where a corrupt database was moved, when it was. */
  readonly quarantined?: string;
}

function quarantine(path: string, nowMs: number): string {
  const stamp = new Date(nowMs).toISOString().replace(/[:.]/g, '-');
  const to = `${path}.corrupt-${stamp}`;
  renameSync(path, to);
  for (const suffix of ['-wal', '-shm']) {
    if (existsSync(path + suffix)) renameSync(path + suffix, to + suffix);
  }
  return to;
}

function openOnce(path: string): Db {
  const db = new Database(path);
  try {
    configure(db);
    migrate(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Opens (creating) the agent database; quarantines a corrupt one and starts clean. */
export function openAgentDb(path: string, log: Logger, nowMs = Date.now()): OpenedDb {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    return { db: openOnce(path) };
  } catch (err) {
    if (!isCorruption(err)) throw err;
    const to = quarantine(path, nowMs);
    log.error(
      { err: (err as Error).message, quarantined: to },
      'database corrupt: quarantined, starting clean',
    );
    return { db: openOnce(path), quarantined: to };
  }
}

/** Opens an existing database read-only (for `outpost agent status`); never migrates or repairs. */
export function openAgentDbReadonly(path: string): Db {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  return db;
}

/** True when an error is SQLite running out of space. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_FULL' || code === 'ENOSPC';
}

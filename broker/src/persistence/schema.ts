/**
 * Opening the broker database: WAL, `synchronous=FULL` until the writer takes over (writer.ts,
 * wal-sync.ts: durable commits are fsynced before they settle; I5: the broker acknowledges a publisher
 * only after its commit), and forward-only migrations numbered by `PRAGMA user_version`.
 *
 * Tables (all keyed by MQTT client id):
 * - `sessions`       one row per persistent session that holds state; `last_seen` drives expiry (I8)
 * - `subscriptions`  filters of clean=false clients, with QoS and MQTT 5 options (JSON)
 * - `outgoing`       queued deliveries in queue order (`seq`), one row per (client, message)
 * - `incoming`       inbound QoS 2 packets awaiting PUBREL
 * - `retained`       one retained message per topic (ordered index: wildcard lookups are range scans)
 * - `wills`          last wills of connected clients, with the id of the broker that holds them
 */
import Database from 'better-sqlite3';

type Db = Database.Database;

/** Migration N (1-based) brings `user_version` from N-1 to N. Append only; never edit a shipped one. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX sessions_last_seen ON sessions (last_seen);

  CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    qos INTEGER NOT NULL,
    options TEXT,
    PRIMARY KEY (client_id, topic)
  );
  CREATE INDEX subscriptions_topic ON subscriptions (topic);

  CREATE TABLE outgoing (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    broker_id TEXT,
    broker_counter INTEGER,
    message_id INTEGER,
    bytes INTEGER NOT NULL,
    meta BLOB NOT NULL,
    payload BLOB,
    payload_text INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX outgoing_client ON outgoing (client_id, seq);
  CREATE INDEX outgoing_broker ON outgoing (client_id, broker_id, broker_counter, seq);
  CREATE INDEX outgoing_message ON outgoing (client_id, message_id, seq);

  CREATE TABLE incoming (
    client_id TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    meta BLOB NOT NULL,
    payload BLOB,
    payload_text INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, message_id)
  ) WITHOUT ROWID;

  CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    meta BLOB NOT NULL,
    payload BLOB,
    payload_text INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;

  CREATE TABLE wills (
    client_id TEXT PRIMARY KEY,
    broker_id TEXT,
    meta BLOB NOT NULL,
    payload BLOB,
    payload_text INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;
  `,
  // 2: packet identifiers of deliveries are looked up in memory (outgoing-store.ts); the index on
  // them only cost every enqueue and clear an extra b-tree write.
  `
  DROP INDEX IF EXISTS outgoing_message;
  `,
  // 3: `meta` may hold a queued PUBLISH in the compact format (packet-codec.ts), which builds of
  // schema 2 cannot read; the version alone makes them refuse the file instead of failing on a row.
  // Rows written before stay in the V8 format, which this build still reads.
  `
  SELECT 1;
  `,
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Error code for a database written by a newer Outpost (refuse rather than corrupt it). */
export const ERR_SCHEMA_TOO_NEW = 'ERR_PERSISTENCE_SCHEMA_TOO_NEW';

function userVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** Applies the missing migrations, each in its own transaction. Returns the version found. */
export function migrate(db: Db): number {
  const found = userVersion(db);
  if (found > SCHEMA_VERSION) {
    throw Object.assign(
      new Error(`broker database schema ${found} is newer than this build supports (${SCHEMA_VERSION})`),
      { code: ERR_SCHEMA_TOO_NEW },
    );
  }
  for (let v = found; v < SCHEMA_VERSION; v++) {
    const sql = MIGRATIONS[v] as string;
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return found;
}

/** Opens (creating if needed) and migrates the broker database. */
export function openDatabase(path: string): { db: Db; migratedFrom: number } {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    // Bound the WAL file left after checkpoints (I8: bounded disk as well as heap).
    db.pragma('journal_size_limit = 67108864');
    const migratedFrom = migrate(db);
    return { db, migratedFrom };
  } catch (err) {
    db.close();
    throw err;
  }
}

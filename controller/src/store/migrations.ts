/**
 * Controller schema, forward-only migrations numbered by `PRAGMA user_version`. Migration N (1-based)
 * brings the database from N-1 to N. Append only; never edit one that has shipped.
 *
 * Times are Unix milliseconds, except `commands.expires_at` (seconds, as in the envelope).
 */
import { ROLLOUTS_MIGRATION } from '../rollouts/schema.js';

export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    uplink_pub BLOB NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    enrolled_at INTEGER NOT NULL,
    -- per-site sequence counter: the last seq allocated (never reused) ...
    seq_alloc INTEGER NOT NULL DEFAULT 0,
    -- ... and the seq of the last command signed for publishing (the prev of the next one)
    seq_issued INTEGER NOT NULL DEFAULT 0,
    issued_at INTEGER,
    last_contact INTEGER,
    online INTEGER,
    status_json TEXT,
    status_at INTEGER,
    state_json TEXT,
    state_at INTEGER,
    state_useq INTEGER,
    last_useq INTEGER
  );

  CREATE TABLE site_groups (
    site TEXT NOT NULL REFERENCES sites (id),
    grp TEXT NOT NULL REFERENCES groups (name),
    PRIMARY KEY (site, grp)
  ) WITHOUT ROWID;
  CREATE INDEX site_groups_grp ON site_groups (grp, site);

  CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    latest_rev INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE stack_revisions (
    stack TEXT NOT NULL REFERENCES stacks (name),
    rev INTEGER NOT NULL,
    spec BLOB NOT NULL,
    z INTEGER NOT NULL,
    digest BLOB NOT NULL,
    compose TEXT NOT NULL,
    compose_digest BLOB NOT NULL,
    critical TEXT NOT NULL,
    allow_tags INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (stack, rev)
  );

  CREATE TABLE site_overrides (
    site TEXT NOT NULL REFERENCES sites (id),
    stack TEXT NOT NULL,
    env TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (site, stack)
  ) WITHOUT ROWID;

  CREATE TABLE site_pins (
    site TEXT NOT NULL REFERENCES sites (id),
    stack TEXT NOT NULL,
    rev INTEGER NOT NULL,
    pinned_at INTEGER NOT NULL,
    pinned_by TEXT NOT NULL,
    PRIMARY KEY (site, stack)
  ) WITHOUT ROWID;

  CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    stack TEXT NOT NULL,
    rev INTEGER NOT NULL,
    target TEXT NOT NULL,
    skipped TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE commands (
    site TEXT NOT NULL REFERENCES sites (id),
    seq INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    type TEXT NOT NULL,
    stack TEXT,
    rev INTEGER,
    body BLOB NOT NULL,
    spec_digest BLOB,
    deployment TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    prev INTEGER,
    envelope BLOB,
    ref BLOB,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    issued_at INTEGER,
    last_sent_at INTEGER,
    next_send_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    acked_at INTEGER,
    done_at INTEGER,
    superseded_by INTEGER,
    PRIMARY KEY (site, seq)
  );
  CREATE INDEX commands_status ON commands (status, site, seq);
  CREATE INDEX commands_ref ON commands (site, ref);
  CREATE INDEX commands_stack ON commands (site, stack, status);
  CREATE INDEX commands_deployment ON commands (deployment);

  CREATE TABLE acks (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL,
    useq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    st TEXT NOT NULL,
    seq INTEGER,
    cmd_id BLOB,
    ref BLOB,
    rc TEXT,
    msg TEXT,
    type TEXT,
    stack TEXT,
    rev INTEGER,
    matched INTEGER,
    received_at INTEGER NOT NULL
  );
  CREATE UNIQUE INDEX acks_dedupe ON acks (site, useq, st, seq);
  CREATE INDEX acks_site ON acks (site, n);

  CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    groups TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name),
    hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
  ) WITHOUT ROWID;

  CREATE TABLE audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    before TEXT,
    after TEXT,
    detail TEXT,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
  );
  -- Append-only: the application never updates or deletes audit rows. The hash chain detects
  -- tampering by anyone who goes around these triggers.
  CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
  CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
  `,
  // 2: the publisher's resend sweep (status = 'published' AND next_send_at <= now) reads an index.
  `
  CREATE INDEX commands_due ON commands (status, next_send_at);
  `,
  // 3: staged rollouts (controller/src/rollouts/schema.ts).
  ROLLOUTS_MIGRATION,
  // 4: maintenance windows per site and per group (store/maintenance.ts, SPEC [MW-7]); wire form JSON.
  `
  CREATE TABLE site_maintenance (
    site TEXT PRIMARY KEY REFERENCES sites (id),
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE group_maintenance (
    grp TEXT PRIMARY KEY REFERENCES groups (name),
    policy TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

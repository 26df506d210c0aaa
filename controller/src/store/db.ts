/**
 * Opening the controller database: WAL with `synchronous=FULL` (I5: the API answers 2xx only after
 * its commit is durable), foreign keys on, and forward-only migrations by `PRAGMA user_version`.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { ApiError } from '../errors.js';
import { MIGRATIONS, SCHEMA_VERSION } from './migrations.js';

export type Db = Database.Database;

export interface OpenDbOptions {
  /** Open read-only and never migrate (audit verification, exports). */
  readonly readonly?: boolean;
}

export function openDb(file: string, opts: OpenDbOptions = {}): Db {
  if (!opts.readonly && file !== ':memory:') mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
  try {
    db.pragma('busy_timeout = 5000');
    if (!opts.readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
    }
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new ApiError(
        'schema-too-new',
        `database ${file} has schema version ${version}; this controller knows up to ${SCHEMA_VERSION}`,
      );
    }
    if (!opts.readonly) migrate(db, version);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

function migrate(db: Db, from: number): void {
  for (let v = from; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

export type Prepare = Db['prepare'];

/**
 * `db.prepare` with a cache by SQL text: hot paths (one deployment to 10,000 sites, the publisher)
 * run the same statements once per command, and compiling them each time would dominate.
 */
export function cachedPrepare(db: Db): Prepare {
  const cache = new Map<string, Database.Statement>();
  return ((sql: string) => {
    let s = cache.get(sql);
    if (!s) {
      s = db.prepare(sql);
      cache.set(sql, s);
    }
    return s;
  }) as Prepare;
}

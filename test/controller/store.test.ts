/** Store: pragmas (I5), migrations by user_version, and per-site seq allocation. */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { createCommand } from '../../controller/src/outbox/create.js';
import { openDb } from '../../controller/src/store/db.js';
import { Store } from '../../controller/src/store/index.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../../controller/src/store/migrations.js';
import { tmpDir } from '../helpers/index.js';

describe('controller store', () => {
  it('opens in WAL with synchronous=FULL and foreign keys (I5), migrated to the current version', () => {
    const file = join(tmpDir('store'), 'c.db');
    const db = openDb(file);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('synchronous', { simple: true })).toBe(2);
    expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    db.close();
    // Re-opening an up-to-date database changes nothing.
    const again = openDb(file);
    expect(again.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    again.close();
  });

  it('migrates a version-1 database forward, keeping its rows', () => {
    const file = join(tmpDir('store'), 'v1.db');
    const v1 = new Database(file);
    v1.exec(MIGRATIONS[0]!);
    v1.pragma('user_version = 1');
    v1.prepare('INSERT INTO sites (id, uplink_pub, enrolled_at) VALUES (?, ?, ?)').run(
      'old',
      Buffer.alloc(32),
      1,
    );
    v1.close();
    const db = openDb(file);
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'commands_due'").get(),
    ).toBeDefined();
    expect(db.prepare('SELECT id FROM sites').all()).toEqual([{ id: 'old' }]);
    db.close();
  });

  it('migrates an empty (version 0) database and refuses one written by a newer controller', () => {
    const dir = tmpDir('store');
    const old = new Database(join(dir, 'old.db'));
    old.exec('CREATE TABLE unrelated (x INTEGER)');
    old.close();
    const db = openDb(join(dir, 'old.db'));
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'commands'").get()).toBeDefined();
    db.close();

    const future = new Database(join(dir, 'future.db'));
    future.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    future.close();
    expect(() => openDb(join(dir, 'future.db'))).toThrow(/schema-too-new/);
  });

  it('allocates per-site seqs in the command transaction; collapsed and rolled-back seqs are never reused (I1)', () => {
    const store = new Store(openDb(join(tmpDir('store'), 'c.db')));
    const now = Date.now();
    store.sites.enrol({ id: 's1', uplinkPub: new Uint8Array(32), labels: {}, groups: [], now });
    store.sites.enrol({ id: 's2', uplinkPub: new Uint8Array(32), labels: {}, groups: [], now });
    const restart = (site: string) =>
      store.tx(() =>
        createCommand(
          store,
          { site, type: 'stack.restart', body: { stack: 'web' }, ttlSec: 3600, actor: 't' },
          now,
        ),
      );
    expect(restart('s1').seq).toBe(1);
    expect(restart('s1')).toMatchObject({ seq: 2, superseded: 1 });
    expect(restart('s2').seq).toBe(1);
    // A transaction that fails after allocating rolls the allocation back with it: nothing was answered.
    expect(() =>
      store.tx(() => {
        restart('s1');
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(restart('s1').seq).toBe(3);
    expect(store.commands.list('s1', { limit: 10 }).map((c) => [c.seq, c.status])).toEqual([
      [3, 'pending'],
      [2, 'superseded'],
      [1, 'superseded'],
    ]);
    store.db.close();
  });
});

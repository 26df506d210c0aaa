/**
 * The agent's SQLite store: migrations by user_version, a corrupt database quarantined at boot
 * (clean start from the provisioned trust root, `db-corrupt` alarm, full state so the controller
 * resyncs), and what must survive a restart: watermarks and the trusted-time floor ([TIME-1]).
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { migrate, openAgentDb, SCHEMA_VERSION } from '../../agent/src/core/db.js';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { tmpDir, waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

const silent = pino({ level: 'silent' });

describe('migrations', () => {
  test('a new database is migrated to the current schema, WAL + synchronous=FULL; reopening is a no-op', () => {
    const path = join(tmpDir('db'), 'agent.db');
    const { db, quarantined } = openAgentDb(path, silent);
    expect(quarantined).toBeUndefined();
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('synchronous', { simple: true })).toBe(2);
    const tables = db
      .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((r) => r.name);
    expect(tables).toEqual(expect.arrayContaining(['alarms', 'desired', 'journal', 'meta', 'outbox']));
    expect(migrate(db)).toBe(SCHEMA_VERSION);
    db.close();
  });

  test('a database from a newer agent is refused, not quarantined', () => {
    const path = join(tmpDir('db'), 'agent.db');
    const raw = new Database(path);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(() => openAgentDb(path, silent)).toThrow(/newer than this agent/);
    expect(existsSync(path)).toBe(true);
  });
});

describe('with a broker', () => {
  let broker: TestBroker;
  let site: TestSite;
  let ctl: TestController;
  let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;

  beforeEach(async () => {
    broker = await startTestBroker();
    site = makeSite('site-a');
    ctl = new TestController(site.pki, broker.url);
    await ctl.connect();
  });

  afterEach(async () => {
    await running?.close();
    running = undefined;
    await ctl.close();
    await broker.close();
  });

  test('corrupt database at boot: quarantined, clean start, db-corrupt alarm, full state published', async () => {
    const dataDir = join(site.dir, 'data');
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'agent.db'), Buffer.alloc(8192, 0x5a));
    writeFileSync(join(dataDir, 'agent.db-wal'), Buffer.alloc(100, 1));
    running = await startAgent(site, { broker: broker.url });
    const st = running.agent.status();
    expect(st.quarantined).toMatch(/agent\.db\.corrupt-/);
    const files = readdirSync(dataDir);
    expect(files.filter((f) => /^agent\.db\.corrupt-[0-9TZ-]+$/.test(f))).toHaveLength(1);
    expect(st.alarms.find((a) => a.code === 'db-corrupt')?.msg).toContain('quarantined');
    expect(st.trustVersion).toBe(1);
    // the controller gets a full snapshot carrying the alarm and resyncs
    const full = await waitFor(() =>
      ctl.states.find((s) => s.full && s.alarms.some((a) => a.code === 'db-corrupt')),
    );
    expect(full.last).toBe(0);
    // the uplink sequence restarted above anything the lost database used ([ACK-2])
    expect(full.useq).toBeGreaterThan(Date.now() - 60_000);
    await ctl.apply('hist', 1);
    await ctl.waitStatus(1, 'applied');
  });

  test('a fresh device with its clock at 1970: the trust root issued-at is the floor ([TIME-1])', async () => {
    running = await startAgent(site, { broker: broker.url }, { clock: { now: () => 0 } });
    await waitFor(() => running?.agent.status().connected, { message: 'connected' });
    const rootIat = site.pki.root.iat;
    await ctl.apply('hist', 1, undefined, { iat: rootIat - 7200, exp: rootIat - 3600 });
    expect((await ctl.waitStatus(1, 'rejected')).rc).toBe('expired');
    await ctl.apply('hist', 2);
    await ctl.waitStatus(2, 'applied');
  });

  test('watermarks and the trusted-time floor survive a restart; a clock reset to 1970 still judges expiry', async () => {
    running = await startAgent(site, { broker: broker.url });
    await waitFor(() => running?.agent.status().connected, { message: 'connected' });
    const now = Math.floor(Date.now() / 1000);
    await ctl.apply('hist', 1, undefined, { iat: now + 600 });
    await ctl.waitStatus(1, 'applied');
    await running.close();
    // the device reboots with its clock at 1970
    running = await startAgent(site, { broker: broker.url }, { clock: { now: () => 0 } });
    await waitFor(() => running?.agent.status().connected, { message: 'reconnected' });
    expect(running.agent.status()).toMatchObject({ contig: 1, applied: 1 });
    // expired against the persisted floor (now + 600), though "valid" for a 1970 clock
    await ctl.apply('hist', 2, undefined, { iat: now, exp: now + 300 });
    expect((await ctl.waitStatus(2, 'rejected')).rc).toBe('expired');
    await ctl.apply('hist', 3, undefined, { iat: now + 600 });
    await ctl.waitStatus(3, 'applied');
  });
});

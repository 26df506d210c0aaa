/**
 * The audit log is append-only and hash-chained: triggers refuse UPDATE/DELETE, and verifyChain names
 * the first entry that was changed, removed or reordered by anyone who went around them.
 */

import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AuditLog, entryHash, exportAudit, GENESIS_HASH, verifyChain } from '../../controller/src/audit.js';
import { run as auditCli } from '../../controller/src/audit-cli.js';
import { openDb } from '../../controller/src/store/db.js';
import { tmpDir } from '../helpers/index.js';
import { makeController } from './helpers/fixture.js';

function seeded(n = 5) {
  const file = join(tmpDir('audit'), 'controller.db');
  const db = openDb(file);
  const log = new AuditLog(db);
  for (let i = 1; i <= n; i++) {
    log.append({
      actor: 'alice',
      action: 'stack.push',
      target: `s${i}`,
      outcome: 'ok',
      after: 'ab'.repeat(32),
      detail: { rev: i, note: 'a,"b"' },
    });
  }
  return { db, log, file };
}

async function collect(fn: (w: Writable) => Promise<unknown>): Promise<string> {
  let out = '';
  const w = new Writable({
    write(chunk, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  await fn(w);
  return out;
}

describe('audit chain', () => {
  it('links every entry to the previous hash and verifies', () => {
    const { db, log } = seeded(5);
    const entries = log.list(0, 100);
    expect(entries.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(entries[0]!.prev).toBe(GENESIS_HASH);
    for (let i = 1; i < entries.length; i++) expect(entries[i]!.prev).toBe(entries[i - 1]!.hash);
    for (const e of entries) expect(entryHash(e)).toBe(e.hash);
    expect(verifyChain(db)).toEqual({ ok: true, entries: 5, head: entries[4]!.hash });
    db.close();
  });

  it('refuses UPDATE and DELETE through the triggers', () => {
    const { db } = seeded(2);
    expect(() => db.prepare("UPDATE audit SET actor = 'mallory' WHERE seq = 1").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit WHERE seq = 2').run()).toThrow(/append-only/);
    db.close();
  });

  it.each([
    [
      'a changed field',
      (db: ReturnType<typeof openDb>) =>
        db.prepare("UPDATE audit SET outcome = 'denied:forbidden' WHERE seq = 3").run(),
      3,
    ],
    [
      'a changed detail',
      (db: ReturnType<typeof openDb>) =>
        db.prepare(`UPDATE audit SET detail = '{"rev":99}' WHERE seq = 2`).run(),
      2,
    ],
    [
      'a recomputed hash (the next link breaks)',
      (db: ReturnType<typeof openDb>) => {
        const row = db.prepare('SELECT * FROM audit WHERE seq = 3').get() as Parameters<
          typeof entryHash
        >[0] & { detail: string };
        const forged = { ...row, actor: 'mallory', detail: JSON.parse(row.detail) };
        db.prepare('UPDATE audit SET actor = ?, hash = ? WHERE seq = 3').run('mallory', entryHash(forged));
      },
      4,
    ],
    [
      'a deleted entry',
      (db: ReturnType<typeof openDb>) => db.prepare('DELETE FROM audit WHERE seq = 2').run(),
      3,
      1,
    ],
  ])('names the tampered row: %s', (_name, tamper, bad, verified = bad - 1) => {
    const { db } = seeded(5);
    db.exec('DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;');
    tamper(db);
    const r = verifyChain(db);
    expect(r.ok).toBe(false);
    expect(r.badRow).toBe(bad);
    expect(r.entries).toBe(verified);
    db.close();
  });

  it('exports JSON lines and CSV', async () => {
    const { db } = seeded(3);
    const jsonl = await collect((w) => exportAudit(db, 'jsonl', w));
    const lines = jsonl
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3]);
    expect(lines[0]).toMatchObject({ actor: 'alice', detail: { rev: 1 } });
    const csv = await collect((w) => exportAudit(db, 'csv', w));
    const rows = csv.trim().split('\r\n');
    expect(rows[0]).toBe('seq,at,actor,action,target,outcome,before,after,detail,prev,hash');
    expect(rows).toHaveLength(4);
    expect(rows[1]).toContain('"{""rev"":1,""note"":""a,\\""b\\""""}"');
    db.close();
  });

  it('audit-cli verify and export read the database directly', async () => {
    const { db, file } = seeded(3);
    db.close();
    const out: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    const origErr = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => {
      out.push(String(s));
      return true;
    }) as typeof process.stdout.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      expect(await auditCli(['verify', '--db', file])).toBe(0);
      expect(await auditCli(['export', '--db', file, '--format', 'csv'])).toBe(0);
      expect(await auditCli(['export', '--db', file, '--format', 'xml'])).toBe(64);
      expect(await auditCli(['verify'])).toBe(64);
      const rw = openDb(file);
      rw.exec('DROP TRIGGER audit_no_update');
      rw.prepare("UPDATE audit SET target = 'x' WHERE seq = 2").run();
      rw.close();
      expect(await auditCli(['verify', '--db', file])).toBe(1);
    } finally {
      process.stdout.write = orig;
      process.stderr.write = origErr;
    }
    const text = out.join('');
    expect(text).toContain('audit log ok: 3 entries');
    expect(text).toContain('seq,at,actor');
    expect(text).toContain('audit log BROKEN at seq 2');
  });
});

describe('audit through the API', () => {
  it('GET /v1/audit/verify names a tampered row; /v1/audit/export returns the log', async () => {
    const f = await makeController();
    for (const name of ['g1', 'g2', 'g3'])
      expect((await f.call('POST', '/v1/groups', { name })).status).toBe(201);
    expect((await f.call('GET', '/v1/audit/verify')).json).toMatchObject({ ok: true });
    const entries = (await f.call('GET', '/v1/audit?after=0&limit=100')).json.entries;
    const target = entries.find((e: { target: string }) => e.target === 'g2');
    const db = f.controller.store.db;
    db.exec('DROP TRIGGER audit_no_update');
    db.prepare("UPDATE audit SET actor = 'someone-else' WHERE seq = ?").run(target.seq);
    const r = (await f.call('GET', '/v1/audit/verify')).json;
    expect(r).toMatchObject({ ok: false, badRow: target.seq });
    const csv = await f.call('GET', '/v1/audit/export?format=csv');
    expect(csv.status).toBe(200);
    expect(csv.contentType).toContain('text/csv');
    expect(csv.text.split('\r\n').filter(Boolean)).toHaveLength(entries.length + 1);
  });
});

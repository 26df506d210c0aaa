/**
 * `outpost audit verify|export`: through the API (admin token), or offline with `--db FILE` reading
 * the controller database read-only through the controller's own audit functions (controller/src/
 * audit.ts), so a broken API or a stopped controller does not stop an audit.
 */
import { createWriteStream, renameSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Db } from '../store/db.js';
import { type AuditVerify, ClientError, EXIT, usageError } from './api.js';
import { type Ctx, positionals } from './common.js';
import { json } from './io.js';

export const AUDIT_HELP = `usage: outpost audit verify [--db FILE]
       outpost audit export [--format jsonl|csv] [--out FILE] [--db FILE]

verify   walk the hash chain of the audit log; exit 0 when it holds, 1 naming the first bad
         entry (its seq) when a row was changed, removed or reordered
export   the whole log in seq order as JSON lines (default) or CSV, to stdout or --out FILE
         (written to FILE.partial, renamed when complete)

Through the API by default (needs an admin token). --db FILE reads the controller database
directly, read-only (e.g. .data/controller/controller.db; the controller may keep running).

examples:
  outpost audit verify
  outpost audit verify --db .data/controller/controller.db
  outpost audit export --format csv --out audit.csv
  outpost audit export --db /backup/controller.db | jq -c 'select(.outcome != "ok")'
`;

export interface AuditValues {
  db?: string | undefined;
  format?: string | undefined;
  out?: string | undefined;
}

export async function audit(ctx: Ctx, sub: string | undefined, v: AuditValues, p: string[]): Promise<number> {
  positionals(p, 0, 0, '');
  if (sub === 'verify') {
    if (v.format !== undefined || v.out !== undefined) throw usageError('--format and --out go with export');
    return verify(ctx, v);
  }
  if (sub === 'export') return exportLog(ctx, v);
  throw usageError(
    sub === undefined ? 'missing subcommand: verify or export' : `unknown subcommand 'audit ${sub}'`,
  );
}

async function withDb<T>(ctx: Ctx, file: string, fn: (db: Db) => Promise<T>): Promise<T> {
  const { openDb } = await import('../store/db.js');
  const path = resolve(ctx.io.cwd ?? process.cwd(), file);
  let db: Db;
  try {
    db = openDb(path, { readonly: true });
  } catch (err) {
    throw new ClientError(`cannot open ${path}: ${(err as Error).message}`, EXIT.invalid, 'bad-db');
  }
  try {
    return await fn(db);
  } finally {
    db.close();
  }
}

async function verify(ctx: Ctx, v: AuditValues): Promise<number> {
  const r: AuditVerify = v.db
    ? await withDb(ctx, v.db, async (db) => (await import('../audit.js')).verifyChain(db))
    : await ctx.api().get<AuditVerify>('/audit/verify');
  const source = v.db ? resolve(ctx.io.cwd ?? process.cwd(), v.db) : ctx.api().baseUrl;
  if (ctx.json) ctx.out(json({ ...r, source }));
  else if (r.ok) ctx.out(`audit log ok: ${r.entries} entries, head ${r.head} (${source})\n`);
  else
    ctx.out(
      `audit log BROKEN at seq ${r.badRow}: ${r.reason} ` +
        `(${r.entries} entries verified before it; ${source})\n`,
    );
  return r.ok ? EXIT.ok : EXIT.failed;
}

async function exportLog(ctx: Ctx, v: AuditValues): Promise<number> {
  const format = v.format ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'csv') throw usageError('--format must be jsonl or csv');
  const cwd = ctx.io.cwd ?? process.cwd();
  const target = v.out ? resolve(cwd, v.out) : undefined;
  const partial = target ? `${target}.partial` : undefined;
  const file = partial ? createWriteStream(partial, { mode: 0o600 }) : undefined;
  const sink: Writable =
    file ??
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        ctx.out(chunk.toString('utf8'));
        cb();
      },
    });
  const write = (chunk: Uint8Array | string): Promise<void> =>
    sink.write(chunk) ? Promise.resolve() : new Promise((r) => sink.once('drain', () => r()));
  try {
    let what: string;
    if (v.db) {
      const n = await withDb(ctx, v.db, async (db) =>
        (await import('../audit.js')).exportAudit(db, format, sink),
      );
      what = `${n} entries`;
    } else {
      const bytes = await ctx.api().download('/audit/export', { format }, write);
      what = `${bytes} bytes`;
    }
    sink.end();
    await finished(sink);
    if (target && partial) renameSync(partial, target);
    if (!ctx.json) ctx.err(`exported ${what}${target ? ` to ${target}` : ''}\n`);
    return EXIT.ok;
  } catch (err) {
    sink.destroy();
    if (partial) rmSync(partial, { force: true });
    throw err;
  }
}

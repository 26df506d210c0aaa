/**
 * Offline audit tools over the controller database (read-only; the controller may be running):
 *
 *   verify --db FILE                              exit 0 when the hash chain verifies, 1 naming the bad row
 *   export --db FILE --format jsonl|csv [--out F]  the whole log, in seq order
 *
 * The operator CLI wraps these as `outpost audit verify|export`.
 */
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { type AuditFormat, exportAudit, verifyChain } from './audit.js';
import { type Db, openDb } from './store/db.js';

const USAGE = `usage: audit verify --db FILE
       audit export --db FILE --format jsonl|csv [--out FILE]
`;

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  let values: { db?: string; format?: string; out?: string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { db: { type: 'string' }, format: { type: 'string' }, out: { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  if ((cmd !== 'verify' && cmd !== 'export') || !values.db) {
    process.stderr.write(USAGE);
    return 64;
  }
  const format = (values.format ?? 'jsonl') as AuditFormat;
  if (cmd === 'export' && format !== 'jsonl' && format !== 'csv') {
    process.stderr.write(`--format must be jsonl or csv\n${USAGE}`);
    return 64;
  }
  let db: Db;
  try {
    db = openDb(values.db, { readonly: true });
  } catch (err) {
    process.stderr.write(`cannot open ${values.db}: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    if (cmd === 'verify') {
      const r = verifyChain(db);
      if (r.ok) {
        process.stdout.write(`audit log ok: ${r.entries} entries, head ${r.head}\n`);
        return 0;
      }
      process.stdout.write(
        `audit log BROKEN at seq ${r.badRow}: ${r.reason} (${r.entries} entries verified before it)\n`,
      );
      return 1;
    }
    const out = values.out ? createWriteStream(values.out, { mode: 0o600 }) : process.stdout;
    const n = await exportAudit(db, format, out);
    if (out !== process.stdout) {
      out.end();
      await finished(out);
    }
    process.stderr.write(`exported ${n} entries\n`);
    return 0;
  } finally {
    db.close();
  }
}

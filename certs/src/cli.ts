/**
 * `outpost certs <command>`: CA, certificates, signing keys and trust root. Thin argument parsing over
 * the library in index.ts; X.509 work uses the system `openssl` CLI (execFile, no shell).
 * Exit codes: 0 ok, 1 operation failed (typed error printed), 64 usage.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isCertsError } from './errors.js';
import {
  initCerts,
  issueScadaCert,
  issueSiteCert,
  refreshCrl,
  revoke,
  rotateTrust,
  uplinkPem,
} from './index.js';

const DEFAULT_DIR = process.env['OUTPOST_CERTS_DIR'] || '.data/certs';

const USAGE = `usage: outpost certs <command> [options]

commands:
  init [--dir D] [--days N] [--ca-days N] [--roots N --threshold K] [--san NAME]... [--force]
        CA (ECDSA P-256) + empty CRL, broker server certificate (SAN localhost, 127.0.0.1, --san extras),
        controller and admin client certificates, controller signing key ctl-1 (all command types),
        approver key approver-1 (approve), N offline root keys (threshold K), trust root v1
  site ID [--dir D] [--days N] [--force]
        site certificate (CN=ID, OU=agent) and the site's uplink Ed25519 key; prints its public key
  scada NAME [--dir D] [--days N] [--password] [--no-cert] [--force]
        read-only SCADA certificate (OU=scada); --password also creates the password user scada:NAME
        (password read from OUTPOST_PASSWORD or the first line of stdin)
  revoke NAME|site:ID|scada:NAME|SERIAL [--dir D]
        revoke a certificate and regenerate crl.pem (a running broker reloads it: SIGHUP or file watch)
  crl [--dir D] [--crl-days N]
        regenerate crl.pem (do so before its nextUpdate; the default validity is 3650 days)
  rotate-trust [--dir D] [--new-roots N] [--threshold K] [--rotate-signing]
        trust root v(N+1), signed by the current and the new root thresholds

--dir defaults to $OUTPOST_CERTS_DIR or .data/certs. Private keys are written 0600, folders 0700.
`;

type Out = (s: string) => void;

function int(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new UsageError(`${flag} must be a positive integer`);
  return Number(v);
}

class UsageError extends Error {}

function readPassword(): string {
  const env = process.env['OUTPOST_PASSWORD'];
  if (env !== undefined) return env;
  let text: string;
  try {
    text = readFileSync(0, 'utf8');
  } catch {
    throw new UsageError('--password: set OUTPOST_PASSWORD or pipe the password on stdin');
  }
  const line = text.split(/\r?\n/, 1)[0] ?? '';
  if (!line) throw new UsageError('--password: empty password on stdin');
  return line;
}

async function dispatch(cmd: string, argv: string[], out: Out): Promise<number> {
  const common = { dir: { type: 'string' as const, default: DEFAULT_DIR } };
  switch (cmd) {
    case 'init': {
      const { values } = parseArgs({
        args: argv,
        options: {
          ...common,
          days: { type: 'string' },
          'ca-days': { type: 'string' },
          roots: { type: 'string' },
          threshold: { type: 'string' },
          san: { type: 'string', multiple: true },
          force: { type: 'boolean' },
        },
      });
      const roots = int(values.roots, '--roots');
      const threshold = int(values.threshold, '--threshold');
      const days = int(values.days, '--days');
      const caDays = int(values['ca-days'], '--ca-days');
      const r = await initCerts(values.dir, {
        ...(roots !== undefined && { roots }),
        ...(threshold !== undefined && { threshold }),
        ...(days !== undefined && { days }),
        ...(caDays !== undefined && { caDays }),
        ...(values.san && { san: values.san }),
        force: values.force ?? false,
      });
      out(`CA, CRL and certificates written to ${r.layout.dir}\n`);
      out(`  broker      ${r.broker.certPath} (serial ${r.broker.serial})\n`);
      out(`  controller  ${r.controller.certPath} (serial ${r.controller.serial})\n`);
      out(`  admin       ${r.admin.certPath} (serial ${r.admin.serial})\n`);
      out(`trust root v${r.trust.version}: ${r.trust.file}\n`);
      out(`  roots ${r.trust.roots.join(', ')} (threshold ${r.trust.threshold}) in ${r.layout.dir}/roots\n`);
      for (const k of r.trust.keys) out(`  key ${k.kid}: ${k.types.join(', ')}\n`);
      out('Keep the roots/ folder offline in production.\n');
      return 0;
    }
    case 'site': {
      const { values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        options: { ...common, days: { type: 'string' }, force: { type: 'boolean' } },
      });
      const [site] = positionals;
      if (!site || positionals.length !== 1) throw new UsageError('site: exactly one site id');
      const days = int(values.days, '--days');
      const r = await issueSiteCert(values.dir, site, {
        force: values.force ?? false,
        ...(days !== undefined && { days }),
      });
      out(`site ${site}: ${r.certPath} (serial ${r.serial}, until ${r.notAfter})\n`);
      out(`uplink key: ${r.uplinkKey}\n`);
      out(`uplink public key (base64): ${Buffer.from(r.uplinkPublicKey).toString('base64')}\n`);
      out(uplinkPem(r.uplinkPublicKey));
      return 0;
    }
    case 'scada': {
      const { values, positionals } = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          ...common,
          days: { type: 'string' },
          password: { type: 'boolean' },
          'no-cert': { type: 'boolean' },
          force: { type: 'boolean' },
        },
      });
      const [name] = positionals;
      if (!name || positionals.length !== 1) throw new UsageError('scada: exactly one name');
      const days = int(values.days, '--days');
      const r = await issueScadaCert(values.dir, name, {
        force: values.force ?? false,
        noCert: values['no-cert'] ?? false,
        ...(values.password && { password: readPassword() }),
        ...(days !== undefined && { days }),
      });
      if (r.cert) out(`scada ${name}: ${r.cert.certPath} (serial ${r.cert.serial})\n`);
      if (r.username) out(`password user: ${r.username}\n`);
      return 0;
    }
    case 'revoke': {
      const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: common });
      const [target] = positionals;
      if (!target || positionals.length !== 1) throw new UsageError('revoke: exactly one name or serial');
      const r = await revoke(values.dir, target);
      out(`revoked ${r.certPath} (serial ${r.serial}); CRL ${r.crl} regenerated\n`);
      out('A running broker picks it up on SIGHUP or when it notices the file change.\n');
      return 0;
    }
    case 'crl': {
      const { values } = parseArgs({ args: argv, options: { ...common, 'crl-days': { type: 'string' } } });
      const path = await refreshCrl(values.dir, int(values['crl-days'], '--crl-days'));
      out(`CRL regenerated: ${path}\n`);
      return 0;
    }
    case 'rotate-trust': {
      const { values } = parseArgs({
        args: argv,
        options: {
          ...common,
          'new-roots': { type: 'string' },
          threshold: { type: 'string' },
          'rotate-signing': { type: 'boolean' },
        },
      });
      const newRoots = int(values['new-roots'], '--new-roots');
      const threshold = int(values.threshold, '--threshold');
      const r = await rotateTrust(values.dir, {
        ...(newRoots !== undefined && { newRoots }),
        ...(threshold !== undefined && { threshold }),
        rotateSigning: values['rotate-signing'] ?? false,
      });
      out(`trust root v${r.version}: ${r.file} (roots ${r.roots.join(', ')}, threshold ${r.threshold})\n`);
      for (const k of r.keys) out(`  key ${k.kid}: ${k.types.join(', ')}\n`);
      out('Publish it to the fleet with a trust.update command.\n');
      return 0;
    }
    default:
      throw new UsageError(`unknown command '${cmd}'`);
  }
}

export async function run(args: string[], io: { out?: Out; err?: Out } = {}): Promise<number> {
  const out = io.out ?? ((s) => void process.stdout.write(s));
  const err = io.err ?? ((s) => void process.stderr.write(s));
  const [cmd, ...rest] = args;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    out(USAGE);
    return cmd ? 0 : 64;
  }
  try {
    return await dispatch(cmd, rest, out);
  } catch (e) {
    if (e instanceof UsageError || (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      err(`outpost certs: ${(e as Error).message}\n\n${USAGE}`);
      return 64;
    }
    if (isCertsError(e)) {
      err(`outpost certs ${cmd}: ${e.message}\n`);
      return 1;
    }
    err(`outpost certs ${cmd}: ${(e as Error).message}\n`);
    return 1;
  }
}

/**
 * `outpost certs` as a library, for tests and `outpost up` (in-process, no CLI parsing):
 *
 *   initCerts(dir, opts)          CA, CRL, broker/controller/admin certificates, signing keys, trust root v1
 *   issueSiteCert(dir, site)      sites/<site>/site.crt|key (CN=site, OU=agent) + uplink Ed25519 key
 *   issueScadaCert(dir, name)     scada/<name>.crt|key (OU=scada) and/or a password user
 *   issueClientCert(dir, opts)    any client certificate (e.g. an expired one for tests)
 *   revoke(dir, target)           revoke by name or serial and regenerate crl.pem
 *   rotateTrust(dir, opts)        trust root v(N+1)
 *
 * X.509 work shells out to the system `openssl` CLI (see openssl.ts); files follow layout.ts.
 */
import { readdir } from 'node:fs/promises';
import { addUser, MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH } from '../../broker/src/users.js';
import { publicKeyToPem, SITE_ID_PATTERN } from '../../protocol/src/index.js';
import {
  type CertRole,
  checkDays,
  createCa,
  DEFAULT_CERT_DAYS,
  findIssuedBySerial,
  generateCrl,
  type Issued,
  issueCert,
  normaliseSerial,
  parseSan,
  requireCa,
  revokeCertFile,
} from './ca.js';
import { CertsError } from './errors.js';
import { ensureDir, exists } from './files.js';
import { writeKeyPair } from './keys.js';
import { type CertsLayout, certsLayout } from './layout.js';
import {
  checkThreshold,
  createGenesisTrust,
  type RotateOptions,
  rotateTrust as rotate,
  type TrustResult,
} from './trust-root.js';

export { CERT_ROLES, type CertRole, type Issued, normaliseSerial, parseSan } from './ca.js';
export { CERTS_ERRORS, CertsError, type CertsErrorCode, isCertsError } from './errors.js';
export { type CertsLayout, certsLayout } from './layout.js';
export type { RotateOptions, TrustResult } from './trust-root.js';

/** CNs of the built-in identities; no site or SCADA user may take them. */
export const RESERVED_NAMES = ['controller', 'admin', 'broker'] as const;

function checkName(kind: string, name: string): void {
  if (!SITE_ID_PATTERN.test(name)) {
    throw new CertsError(
      'invalid-name',
      `${kind} ${JSON.stringify(name)} must match ${SITE_ID_PATTERN.source}`,
    );
  }
  if ((RESERVED_NAMES as readonly string[]).includes(name)) {
    throw new CertsError('invalid-name', `${JSON.stringify(name)} is reserved`);
  }
}

/** Sites and SCADA users share one client-id space on the broker: a name may belong to one of them. */
async function checkNameFree(l: CertsLayout, role: 'agent' | 'scada', name: string): Promise<void> {
  const clash = role === 'agent' ? await exists(l.scadaCert(name)) : await exists(l.siteDir(name));
  if (clash) {
    const other = role === 'agent' ? 'a SCADA identity' : 'a site';
    throw new CertsError('name-taken', `${JSON.stringify(name)} is already ${other}`);
  }
}

export interface InitOptions {
  /** Validity of the leaf certificates, in days (default 825). */
  readonly days?: number;
  /** Validity of the CA certificate, in days (default 3650). */
  readonly caDays?: number;
  /** Number of offline root keys (default 1) and how many must sign a trust root (default 1). */
  readonly roots?: number;
  readonly threshold?: number;
  /** Extra subjectAltNames for the broker certificate (`DNS:x`, `IP:y`, or bare). */
  readonly san?: readonly string[];
  /** Replace an existing CA and trust root. */
  readonly force?: boolean;
  readonly now?: Date;
}

export interface InitResult {
  readonly layout: CertsLayout;
  readonly broker: Issued;
  readonly controller: Issued;
  readonly admin: Issued;
  readonly trust: TrustResult;
  /** kid of the controller's command-signing key (signing/<kid>.key). */
  readonly controllerKid: string;
  readonly approverKid: string;
}

export async function initCerts(dir: string, opts: InitOptions = {}): Promise<InitResult> {
  const l = certsLayout(dir);
  const san = ['DNS:localhost', 'IP:127.0.0.1', ...(opts.san ?? []).map(parseSan)];
  const days = opts.days ?? DEFAULT_CERT_DAYS;
  // Validate everything before the first write: bad input changes nothing.
  checkThreshold(opts.roots ?? 1, opts.threshold ?? 1);
  for (const d of [days, opts.caDays ?? 1]) {
    if (!Number.isInteger(d) || d < 1 || d > 36500) {
      throw new CertsError('invalid-argument', `validity must be 1..36500 days, got ${d}`);
    }
  }
  if (!opts.force && (await exists(l.trustRoot))) {
    throw new CertsError('exists', `${l.trustRoot} already exists (use --force to replace it)`);
  }
  await createCa(l, {
    certDays: days,
    force: opts.force ?? false,
    ...(opts.caDays !== undefined && { caDays: opts.caDays }),
  });
  const broker = await issueCert(l, {
    cn: 'broker',
    kind: 'server',
    certPath: l.brokerCert,
    keyPath: l.brokerKey,
    days,
    san: [...new Set(san)],
  });
  const controller = await issueCert(l, {
    cn: 'controller',
    role: 'controller',
    kind: 'client',
    certPath: l.controllerCert,
    keyPath: l.controllerKey,
    days,
  });
  const admin = await issueCert(l, {
    cn: 'admin',
    role: 'admin',
    kind: 'client',
    certPath: l.adminCert,
    keyPath: l.adminKey,
    days,
  });
  const trust = await createGenesisTrust(l, {
    roots: opts.roots ?? 1,
    threshold: opts.threshold ?? 1,
    force: opts.force ?? false,
    ...(opts.now && { now: opts.now }),
  });
  const controllerKid = trust.keys.find((k) => k.kid.startsWith('ctl-'))!.kid;
  const approverKid = trust.keys.find((k) => k.kid.startsWith('approver-'))!.kid;
  return { layout: l, broker, controller, admin, trust, controllerKid, approverKid };
}

export interface SiteOptions {
  readonly days?: number;
  /** Re-issue: a new certificate and a new uplink key replace the old ones (revoke the old cert!). */
  readonly force?: boolean;
}

export interface SiteResult extends Issued {
  readonly site: string;
  readonly uplinkKey: string;
  readonly uplinkPub: string;
  /** Raw 32-byte Ed25519 public key of the site's uplink signing key. */
  readonly uplinkPublicKey: Uint8Array;
}

export async function issueSiteCert(dir: string, site: string, opts: SiteOptions = {}): Promise<SiteResult> {
  const l = certsLayout(dir);
  checkName('site id', site);
  await checkNameFree(l, 'agent', site);
  checkDays(opts.days);
  await requireCa(l);
  if (!opts.force && (await exists(l.siteCert(site)))) {
    throw new CertsError('exists', `site ${site} already has a certificate (use --force to re-issue)`);
  }
  await ensureDir(l.siteDir(site));
  const issued = await issueCert(l, {
    cn: site,
    role: 'agent',
    kind: 'client',
    certPath: l.siteCert(site),
    keyPath: l.siteKey(site),
    ...(opts.days !== undefined && { days: opts.days }),
  });
  const pair = await writeKeyPair(l.siteUplinkKey(site), l.siteUplinkPub(site), { force: true });
  return {
    ...issued,
    site,
    uplinkKey: l.siteUplinkKey(site),
    uplinkPub: l.siteUplinkPub(site),
    uplinkPublicKey: pair.publicKey,
  };
}

export interface ScadaOptions {
  readonly days?: number;
  readonly force?: boolean;
  /** Also (or, with `noCert`, only) create a password user `scada:<name>` in users.json. */
  readonly password?: string;
  readonly noCert?: boolean;
  /** scrypt cost for the password hash (tests lower it). */
  readonly scrypt?: { N: number; r: number; p: number };
}

export interface ScadaResult {
  readonly name: string;
  readonly cert?: Issued;
  /** MQTT username when a password user was created. */
  readonly username?: string;
}

export async function issueScadaCert(
  dir: string,
  name: string,
  opts: ScadaOptions = {},
): Promise<ScadaResult> {
  const l = certsLayout(dir);
  checkName('SCADA name', name);
  await checkNameFree(l, 'scada', name);
  if (opts.noCert && opts.password === undefined) {
    throw new CertsError('invalid-argument', 'nothing to create: --no-cert without --password');
  }
  checkDays(opts.days);
  if (
    opts.password !== undefined &&
    (opts.password.length < MIN_PASSWORD_LENGTH || opts.password.length > MAX_PASSWORD_LENGTH)
  ) {
    throw new CertsError(
      'invalid-argument',
      `password must be ${MIN_PASSWORD_LENGTH}..${MAX_PASSWORD_LENGTH} characters`,
    );
  }
  let cert: Issued | undefined;
  if (!opts.noCert) {
    if (!opts.force && (await exists(l.scadaCert(name)))) {
      throw new CertsError('exists', `SCADA identity ${name} already has a certificate (use --force)`);
    }
    cert = await issueCert(l, {
      cn: name,
      role: 'scada',
      kind: 'client',
      certPath: l.scadaCert(name),
      keyPath: l.scadaKey(name),
      ...(opts.days !== undefined && { days: opts.days }),
    });
  }
  let username: string | undefined;
  if (opts.password !== undefined) {
    try {
      username = await addUser(l.usersFile, {
        role: 'scada',
        name,
        password: opts.password,
        force: opts.force ?? false,
        ...(opts.scrypt && { scrypt: opts.scrypt }),
      });
    } catch (err) {
      throw new CertsError('invalid-argument', (err as Error).message);
    }
  }
  return { name, ...(cert && { cert }), ...(username && { username }) };
}

export interface ClientCertOptions {
  readonly cn: string;
  readonly role: CertRole;
  readonly certPath: string;
  readonly keyPath: string;
  readonly days?: number;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/** Any client certificate from the CA, written where the caller says (tests: expired certificates). */
export async function issueClientCert(dir: string, opts: ClientCertOptions): Promise<Issued> {
  return issueCert(certsLayout(dir), { ...opts, kind: 'client' });
}

/**
 * Resolves what `revoke` names: `site:ID`, `scada:NAME`, `controller`, `admin`, a bare site or SCADA
 * name, or a serial (hex, colons allowed) of any certificate the CA issued.
 */
async function resolveRevokeTarget(l: CertsLayout, target: string): Promise<string> {
  const [kind, rest] = target.includes(':') && !/^[0-9a-f:]+$/i.test(target) ? target.split(':', 2) : [];
  if (kind === 'site' && rest) return l.siteCert(rest);
  if (kind === 'scada' && rest) return l.scadaCert(rest);
  if (target === 'controller') return l.controllerCert;
  if (target === 'admin') return l.adminCert;
  if (SITE_ID_PATTERN.test(target)) {
    const site = await exists(l.siteCert(target));
    const scada = await exists(l.scadaCert(target));
    if (site && !scada) return l.siteCert(target);
    if (scada && !site) return l.scadaCert(target);
  }
  const bySerial = await findIssuedBySerial(l, target);
  if (bySerial) return bySerial;
  throw new CertsError('not-found', `no certificate named or numbered ${JSON.stringify(target)}`);
}

export interface RevokeResult {
  readonly serial: string;
  readonly certPath: string;
  readonly crl: string;
}

export async function revoke(dir: string, target: string): Promise<RevokeResult> {
  const l = certsLayout(dir);
  const certPath = await resolveRevokeTarget(l, target);
  if (!(await exists(certPath))) throw new CertsError('not-found', `${certPath} does not exist`);
  const serial = await revokeCertFile(l, certPath);
  return { serial: normaliseSerial(serial), certPath, crl: l.crl };
}

/** Regenerates crl.pem (e.g. before the current one's nextUpdate). */
export async function refreshCrl(dir: string, crlDays?: number): Promise<string> {
  const l = certsLayout(dir);
  await generateCrl(l, crlDays);
  return l.crl;
}

export async function rotateTrust(dir: string, opts: RotateOptions = {}): Promise<TrustResult> {
  return rotate(certsLayout(dir), opts);
}

/** Site ids that have a certificate in `dir`. */
export async function listSites(dir: string): Promise<string[]> {
  const l = certsLayout(dir);
  if (!(await exists(`${l.dir}/sites`))) return [];
  const out: string[] = [];
  for (const s of await readdir(`${l.dir}/sites`)) if (await exists(l.siteCert(s))) out.push(s);
  return out.sort();
}

export function uplinkPem(pub: Uint8Array): string {
  return publicKeyToPem(pub);
}

/**
 * `outpost certs` as a library, with the real openssl CLI: the layout and its permissions, subjects
 * the broker reads (CN = identity, OU = role), revocation into crl.pem, and trust roots that the
 * protocol's own verifier accepts ([TRUST-1]..[TRUST-4]).
 */

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokedSerials } from '../../broker/src/crl.js';
import { UserStore } from '../../broker/src/users.js';
import {
  certsLayout,
  type InitResult,
  initCerts,
  issueClientCert,
  issueScadaCert,
  issueSiteCert,
  listSites,
  normaliseSerial,
  revoke,
  rotateTrust,
} from '../../certs/src/index.js';
import { openTrustRoot, publicKeyFromPem } from '../../protocol/src/index.js';
import { cleanupTmpDirs, tmpDir } from '../helpers/index.js';

const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };
const mode = (p: string) => statSync(p).mode & 0o777;
const subject = (p: string) => new X509Certificate(readFileSync(p)).subject;

let dir: string;
let init: InitResult;

beforeAll(async () => {
  dir = join(tmpDir('certs'), 'pki');
  init = await initCerts(dir, { roots: 3, threshold: 2, san: ['broker.example.org', 'IP:10.0.0.5'] });
});

afterAll(() => cleanupTmpDirs());

describe('init', () => {
  it('writes the layout: keys 0600, folders 0700', () => {
    const l = certsLayout(dir);
    for (const f of [
      l.caKey,
      l.brokerKey,
      l.controllerKey,
      l.adminKey,
      l.signingKey('ctl-1'),
      l.signingKey('approver-1'),
      l.rootKey('root-1'),
    ]) {
      expect(mode(f), f).toBe(0o600);
    }
    for (const d of [dir, join(dir, 'signing'), join(dir, 'roots'), join(dir, 'trust'), l.caDir]) {
      expect(mode(d), d).toBe(0o700);
    }
    for (const f of [
      l.caCert,
      l.crl,
      l.brokerCert,
      l.controllerCert,
      l.adminCert,
      l.trustRoot,
      l.trustRootVersion(1),
    ]) {
      expect(existsSync(f), f).toBe(true);
    }
  });

  it('issues an ECDSA P-256 CA and the built-in identities with the subjects the broker reads', () => {
    const l = certsLayout(dir);
    const ca = new X509Certificate(readFileSync(l.caCert));
    expect(ca.ca).toBe(true);
    expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(subject(l.controllerCert)).toMatch(/OU=controller\nCN=controller/);
    expect(subject(l.adminCert)).toMatch(/OU=admin\nCN=admin/);
    const broker = new X509Certificate(readFileSync(l.brokerCert));
    expect(broker.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, DNS:broker.example.org, IP Address:10.0.0.5',
    );
    expect(broker.checkIssued(ca)).toBe(true);
    expect(broker.verify(ca.publicKey)).toBe(true);
    // openssl agrees the chain is valid and the server certificate is for TLS servers
    const out = execFileSync('openssl', [
      'verify',
      '-CAfile',
      l.caCert,
      '-purpose',
      'sslserver',
      l.brokerCert,
    ]).toString();
    expect(out).toContain('OK');
  });

  it('writes trust root v1: roots 3, threshold 2, ctl-1 for every command type, approver-1 for approve', () => {
    const doc = openTrustRoot(new Uint8Array(readFileSync(certsLayout(dir).trustRoot)));
    expect(doc.ver).toBe(1);
    expect(doc.thr).toBe(2);
    expect(doc.roots.map((r) => r.kid)).toEqual(['root-1', 'root-2', 'root-3']);
    expect(doc.keys.map((k) => [k.kid, k.types])).toEqual([
      [
        'ctl-1',
        ['stack.apply', 'stack.remove', 'stack.restart', 'state.request', 'heartbeat', 'trust.update'],
      ],
      ['approver-1', ['approve']],
    ]);
    const ctlPub = publicKeyFromPem(readFileSync(certsLayout(dir).signingPub('ctl-1'), 'utf8'));
    expect(Buffer.from(doc.keys[0]!.pub).equals(Buffer.from(ctlPub))).toBe(true);
    expect(init.controllerKid).toBe('ctl-1');
    expect(init.approverKid).toBe('approver-1');
  });

  it('refuses to overwrite an existing CA without force, and changes nothing', async () => {
    const before = readFileSync(certsLayout(dir).caCert);
    await expect(initCerts(dir)).rejects.toMatchObject({ code: 'exists' });
    expect(readFileSync(certsLayout(dir).caCert).equals(before)).toBe(true);
  });

  it('refuses a threshold above the root count or a zero validity, writing nothing', async () => {
    const d = join(tmpDir('c'), 'x');
    await expect(initCerts(d, { roots: 2, threshold: 3 })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    await expect(initCerts(d, { days: 0 })).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(initCerts(d, { san: ['bad name!'] })).rejects.toMatchObject({ code: 'invalid-argument' });
    expect(existsSync(d)).toBe(false);
  });

  it('init --force replaces the CA', async () => {
    const d = join(tmpDir('force'), 'pki');
    const first = await initCerts(d);
    const second = await initCerts(d, { force: true });
    expect(second.broker.serial).not.toBe(first.broker.serial);
    expect(readFileSync(certsLayout(d).caIndex, 'utf8').split('\n').filter(Boolean)).toHaveLength(3);
  });
});

describe('site and SCADA identities', () => {
  it('a site gets CN=site OU=agent and an Ed25519 uplink key whose public half is returned', async () => {
    const r = await issueSiteCert(dir, 'pump-7');
    const l = certsLayout(dir);
    expect(subject(l.siteCert('pump-7'))).toMatch(/OU=agent\nCN=pump-7/);
    expect(mode(l.siteKey('pump-7'))).toBe(0o600);
    expect(mode(l.siteUplinkKey('pump-7'))).toBe(0o600);
    expect(mode(l.siteDir('pump-7'))).toBe(0o700);
    const pub = publicKeyFromPem(readFileSync(l.siteUplinkPub('pump-7'), 'utf8'));
    expect(Buffer.from(pub).equals(Buffer.from(r.uplinkPublicKey))).toBe(true);
    expect(await listSites(dir)).toContain('pump-7');
    await expect(issueSiteCert(dir, 'pump-7')).rejects.toMatchObject({ code: 'exists' });
  });

  it('invalid, reserved and colliding names are refused before anything is written', async () => {
    for (const bad of ['Pump', 'a/b', '', 'x'.repeat(64), '-lead', 'a.b']) {
      await expect(issueSiteCert(dir, bad), bad).rejects.toMatchObject({ code: 'invalid-name' });
    }
    await expect(issueSiteCert(dir, 'controller')).rejects.toMatchObject({ code: 'invalid-name' });
    await issueScadaCert(dir, 'panel-1');
    await expect(issueSiteCert(dir, 'panel-1')).rejects.toMatchObject({ code: 'name-taken' });
    await expect(issueScadaCert(dir, 'pump-7')).rejects.toMatchObject({ code: 'name-taken' });
    expect(existsSync(certsLayout(dir).siteDir('panel-1'))).toBe(false);
    await expect(issueSiteCert(dir, 'pump-8', { days: 0 })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    expect(existsSync(certsLayout(dir).siteDir('pump-8'))).toBe(false);
    await expect(issueScadaCert(dir, 'panel-2', { password: 'short' })).rejects.toMatchObject({
      code: 'invalid-argument',
    });
    expect(existsSync(certsLayout(dir).scadaCert('panel-2'))).toBe(false);
  });

  it('SCADA: OU=scada certificate and an optional scrypt password user', async () => {
    const r = await issueScadaCert(dir, 'hmi', { password: 'hmi-password', scrypt: FAST_SCRYPT });
    expect(subject(r.cert!.certPath)).toMatch(/OU=scada\nCN=hmi/);
    expect(r.username).toBe('scada:hmi');
    const users = await UserStore.open(certsLayout(dir).usersFile);
    expect(await users.verify('scada:hmi', 'hmi-password')).toEqual({ role: 'scada', name: 'hmi' });
    const only = await issueScadaCert(dir, 'historian', {
      password: 'hist-password',
      noCert: true,
      scrypt: FAST_SCRYPT,
    });
    expect(only.cert).toBeUndefined();
    expect(existsSync(certsLayout(dir).scadaCert('historian'))).toBe(false);
  });

  it('an explicitly dated certificate can be issued already expired (for tests)', async () => {
    const certPath = join(dir, 'expired', 'x.crt');
    const r = await issueClientCert(dir, {
      cn: 'site-x',
      role: 'agent',
      certPath,
      keyPath: join(dir, 'expired', 'x.key'),
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2020-01-02T00:00:00Z'),
    });
    expect(new Date(r.notAfter).getTime()).toBeLessThan(Date.now());
    expect(() =>
      execFileSync('openssl', ['verify', '-CAfile', certsLayout(dir).caCert, certPath], { stdio: 'pipe' }),
    ).toThrow(/expired/);
  });
});

describe('revocation', () => {
  it('revoke by name and by serial updates crl.pem; revoking twice is a typed error', async () => {
    const a = await issueSiteCert(dir, 'rev-a');
    const b = await issueSiteCert(dir, 'rev-b');
    const r1 = await revoke(dir, 'rev-a');
    expect(r1.serial).toBe(normaliseSerial(a.serial));
    const r2 = await revoke(dir, b.serial.toLowerCase().match(/../g)!.join(':'));
    expect(r2.certPath).toMatch(/newcerts/);
    const crl = readFileSync(certsLayout(dir).crl, 'utf8');
    const serials = revokedSerials(crl);
    expect(serials.has(normaliseSerial(a.serial))).toBe(true);
    expect(serials.has(normaliseSerial(b.serial))).toBe(true);
    const text = execFileSync('openssl', ['crl', '-in', certsLayout(dir).crl, '-noout', '-text']).toString();
    expect(text).toContain(a.serial);
    await expect(revoke(dir, 'site:rev-a')).rejects.toMatchObject({ code: 'exists' });
    await expect(revoke(dir, 'no-such-thing')).rejects.toMatchObject({ code: 'not-found' });
    // openssl refuses the revoked certificate against the CRL
    expect(() =>
      execFileSync(
        'openssl',
        [
          'verify',
          '-crl_check',
          '-CAfile',
          certsLayout(dir).caCert,
          '-CRLfile',
          certsLayout(dir).crl,
          a.certPath,
        ],
        { stdio: 'pipe' },
      ),
    ).toThrow(/revoked/);
  });
});

describe('trust rotation ([TRUST-4])', () => {
  it('v2 keeps the roots and rotates the online keys; v3 replaces the roots; each verifies against its predecessor', async () => {
    const l = certsLayout(dir);
    const v1 = openTrustRoot(new Uint8Array(readFileSync(l.trustRootVersion(1))));
    const r2 = await rotateTrust(dir, { rotateSigning: true });
    expect(r2.version).toBe(2);
    const v2bytes = new Uint8Array(readFileSync(l.trustRootVersion(2)));
    const v2 = openTrustRoot(v2bytes, { current: v1 });
    expect(v2.keys.map((k) => k.kid)).toEqual(['ctl-2', 'approver-2']);
    expect(v2.roots.map((r) => r.kid)).toEqual(['root-1', 'root-2', 'root-3']);
    expect(readFileSync(l.trustRoot).equals(Buffer.from(v2bytes))).toBe(true);

    const r3 = await rotateTrust(dir, { newRoots: 2, threshold: 2 });
    expect(r3.roots).toEqual(['root-4', 'root-5']);
    const v3 = openTrustRoot(new Uint8Array(readFileSync(l.trustRootVersion(3))), { current: v2 });
    expect(v3.thr).toBe(2);
    expect(v3.keys.map((k) => k.kid)).toEqual(['ctl-2', 'approver-2']);
    // skipping a version is refused by the protocol verifier
    expect(() => openTrustRoot(new Uint8Array(readFileSync(l.trustRootVersion(3))), { current: v1 })).toThrow(
      /trust-version/,
    );
  });

  it('without enough current root private keys nothing is written', async () => {
    const d = join(tmpDir('rot'), 'pki');
    await initCerts(d, { roots: 2, threshold: 2 });
    rmSync(certsLayout(d).rootKey('root-2'));
    await expect(rotateTrust(d)).rejects.toMatchObject({ code: 'trust' });
    expect(existsSync(certsLayout(d).trustRootVersion(2))).toBe(false);
    expect(openTrustRoot(new Uint8Array(readFileSync(certsLayout(d).trustRoot))).ver).toBe(1);
  });
});

/**
 * Where `outpost certs` writes things, and where every component looks for them (one definition).
 * Private keys are written 0600, folders 0700.
 *
 *   <dir>/ca.crt ca.key crl.pem            X.509 CA (ECDSA P-256) and its revocation list
 *   <dir>/broker.crt broker.key            broker TLS server certificate (SAN localhost, 127.0.0.1)
 *   <dir>/controller.crt controller.key    controller's MQTT client certificate (OU=controller)
 *   <dir>/admin.crt admin.key              admin MQTT client certificate (OU=admin)
 *   <dir>/signing/<kid>.key .pub           online Ed25519 command-signing keys (PKCS#8 / SPKI PEM)
 *   <dir>/roots/<kid>.key .pub             offline root keys (in production: kept off this machine)
 *   <dir>/trust/trust-root-v<N>.cbor       trust-root documents (COSE_Sign); trust-root.cbor = latest
 *   <dir>/sites/<site>/site.crt site.key   a site's MQTT client certificate (CN=site, OU=agent)
 *   <dir>/sites/<site>/uplink.key .pub     the site's Ed25519 key that signs its acks and state
 *   <dir>/scada/<name>.crt .key            read-only SCADA client certificates (OU=scada)
 *   <dir>/users.json                       broker password users (scrypt hashes; SCADA without a certificate,
 *                                          loopback development)
 *   <dir>/ca/openssl.cnf index.txt serial crlnumber newcerts/<SERIAL>.pem
 *                                          the `openssl ca` database: every issued certificate by serial,
 *                                          revocations, CRL number (needed by `outpost certs revoke`)
 */
import { join } from 'node:path';

export interface CertsLayout {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly crl: string;
  readonly brokerCert: string;
  readonly brokerKey: string;
  readonly controllerCert: string;
  readonly controllerKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly trustRoot: string;
  signingKey(kid: string): string;
  signingPub(kid: string): string;
  rootKey(kid: string): string;
  rootPub(kid: string): string;
  trustRootVersion(ver: number): string;
  siteDir(site: string): string;
  siteCert(site: string): string;
  siteKey(site: string): string;
  siteUplinkKey(site: string): string;
  siteUplinkPub(site: string): string;
  scadaCert(name: string): string;
  scadaKey(name: string): string;
  readonly usersFile: string;
  readonly caDir: string;
  readonly caConfig: string;
  readonly caIndex: string;
  readonly caSerial: string;
  readonly caCrlNumber: string;
  readonly caNewCerts: string;
}

export function certsLayout(dir: string): CertsLayout {
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    crl: join(dir, 'crl.pem'),
    brokerCert: join(dir, 'broker.crt'),
    brokerKey: join(dir, 'broker.key'),
    controllerCert: join(dir, 'controller.crt'),
    controllerKey: join(dir, 'controller.key'),
    adminCert: join(dir, 'admin.crt'),
    adminKey: join(dir, 'admin.key'),
    trustRoot: join(dir, 'trust', 'trust-root.cbor'),
    signingKey: (kid) => join(dir, 'signing', `${kid}.key`),
    signingPub: (kid) => join(dir, 'signing', `${kid}.pub`),
    rootKey: (kid) => join(dir, 'roots', `${kid}.key`),
    rootPub: (kid) => join(dir, 'roots', `${kid}.pub`),
    trustRootVersion: (ver) => join(dir, 'trust', `trust-root-v${ver}.cbor`),
    siteDir: (site) => join(dir, 'sites', site),
    siteCert: (site) => join(dir, 'sites', site, 'site.crt'),
    siteKey: (site) => join(dir, 'sites', site, 'site.key'),
    siteUplinkKey: (site) => join(dir, 'sites', site, 'uplink.key'),
    siteUplinkPub: (site) => join(dir, 'sites', site, 'uplink.pub'),
    scadaCert: (name) => join(dir, 'scada', `${name}.crt`),
    scadaKey: (name) => join(dir, 'scada', `${name}.key`),
    usersFile: join(dir, 'users.json'),
    caDir: join(dir, 'ca'),
    caConfig: join(dir, 'ca', 'openssl.cnf'),
    caIndex: join(dir, 'ca', 'index.txt'),
    caSerial: join(dir, 'ca', 'serial'),
    caCrlNumber: join(dir, 'ca', 'crlnumber'),
    caNewCerts: join(dir, 'ca', 'newcerts'),
  };
}

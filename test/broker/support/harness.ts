/**
 * Shared set-up for the broker suites: a real PKI made by `outpost certs` (openssl), a real broker
 * (createBroker, TLS on 127.0.0.1 port 0), real MQTT.js clients over TLS, Mosquitto's own clients,
 * and a pino logger whose lines the tests can read (refusals must be logged with a reason).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { type Logger, pino } from 'pino';
import { type Broker, createBroker, type StartedPorts } from '../../../broker/src/broker.js';
import type { PersistenceOption } from '../../../broker/src/store.js';
import {
  certsLayout,
  initCerts,
  issueClientCert,
  issueScadaCert,
  issueSiteCert,
} from '../../../certs/src/index.js';
import { type Spawned, spawnProcess } from '../../helpers/index.js';

export const SCADA_PASSWORD = 'correct horse battery';
/** Cheap scrypt for tests (the product default is N=16384). */
export const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };

export interface Pki {
  readonly dir: string;
  /** A second, unrelated CA with a site certificate "site-a" (foreign to the broker). */
  readonly foreignDir: string;
  /** site-x: issued by our CA, expired in 2020. */
  readonly expired: { cert: string; key: string };
}

/** Our CA with site-a, site-b, scada "hmi" (certificate + password), plus a foreign CA and an expired cert. */
export async function makePki(root: string): Promise<Pki> {
  const dir = join(root, 'certs');
  const foreignDir = join(root, 'foreign');
  await initCerts(dir);
  await issueSiteCert(dir, 'site-a');
  await issueSiteCert(dir, 'site-b');
  await issueScadaCert(dir, 'hmi', { password: SCADA_PASSWORD, scrypt: FAST_SCRYPT });
  await initCerts(foreignDir);
  await issueSiteCert(foreignDir, 'site-a');
  const expired = { cert: join(dir, 'expired', 'site-x.crt'), key: join(dir, 'expired', 'site-x.key') };
  await issueClientCert(dir, {
    cn: 'site-x',
    role: 'agent',
    certPath: expired.cert,
    keyPath: expired.key,
    notBefore: new Date('2020-01-01T00:00:00Z'),
    notAfter: new Date('2020-01-02T00:00:00Z'),
  });
  return { dir, foreignDir, expired };
}

export interface TlsIdentity {
  readonly ca: string;
  readonly cert?: string;
  readonly key?: string;
}

/** Files of a named identity in a certs dir: `controller`, `admin`, `site:<id>`, `scada:<name>`. */
export function identityFiles(dir: string, who: string): TlsIdentity {
  const l = certsLayout(dir);
  if (who === 'controller') return { ca: l.caCert, cert: l.controllerCert, key: l.controllerKey };
  if (who === 'admin') return { ca: l.caCert, cert: l.adminCert, key: l.adminKey };
  const [kind, name] = who.split(':') as [string, string];
  if (kind === 'site') return { ca: l.caCert, cert: l.siteCert(name), key: l.siteKey(name) };
  if (kind === 'scada') return { ca: l.caCert, cert: l.scadaCert(name), key: l.scadaKey(name) };
  throw new Error(`unknown identity ${who}`);
}

export interface LogCapture {
  readonly logger: Logger;
  readonly lines: Array<Record<string, unknown>>;
  /** Lines with this `reason` (and optionally more matching fields). */
  find(reason: string, fields?: Record<string, unknown>): Array<Record<string, unknown>>;
}

export function captureLog(level = 'debug'): LogCapture {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  const logger = pino({ level }, sink);
  return {
    logger,
    lines,
    find: (reason, fields = {}) =>
      lines.filter((l) => l['reason'] === reason && Object.entries(fields).every(([k, v]) => l[k] === v)),
  };
}

export interface RunningBroker {
  readonly broker: Broker;
  readonly ports: StartedPorts;
  readonly log: LogCapture;
  rejects(reason: string): Promise<number>;
  close(): Promise<void>;
}

export async function startBroker(
  pkiDir: string | undefined,
  config: Record<string, unknown> = {},
  opts: { persistence?: PersistenceOption } = {},
): Promise<RunningBroker> {
  const log = captureLog();
  const c = config as Record<string, Record<string, unknown> | undefined>;
  const broker = createBroker({
    log: log.logger,
    ...(opts.persistence !== undefined && { persistence: opts.persistence }),
    config: {
      ...config,
      ...(pkiDir && { certsDir: pkiDir }),
      tls: { host: '127.0.0.1', port: 0, enabled: pkiDir !== undefined, watchCrlMs: 0, ...c['tls'] },
      metrics: { host: '127.0.0.1', port: 0, ...c['metrics'] },
      // generous: every test connects from 127.0.0.1
      rateLimit: {
        perIpBurst: 1000,
        perIpPerSec: 1000,
        globalBurst: 1000,
        globalPerSec: 1000,
        ...c['rateLimit'],
      },
    },
  });
  const ports = await broker.start();
  return {
    broker,
    ports,
    log,
    rejects: (reason) => broker.metrics.value('outpost_broker_rejects_total', { reason }),
    close: () => broker.close(),
  };
}

/** MQTT.js over TLS as a certificate identity (or with username/password when `who` has no cert). */
export async function tlsClient(
  port: number,
  id: TlsIdentity,
  opts: IClientOptions = {},
): Promise<MqttClient> {
  return connectAsync(`mqtts://127.0.0.1:${port}`, {
    ca: readFileSync(id.ca),
    ...(id.cert && { cert: readFileSync(id.cert) }),
    ...(id.key && { key: readFileSync(id.key) }),
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    keepalive: 30,
    ...opts,
  });
}

/** An MQTT.js connection attempt expected to fail; resolves with the error. */
export async function tlsRefused(port: number, id: TlsIdentity, opts: IClientOptions = {}): Promise<Error> {
  try {
    const c = await tlsClient(port, id, opts);
    await c.endAsync(true);
  } catch (err) {
    return err as Error;
  }
  throw new Error('connection was accepted but should have been refused');
}

/** Arguments Mosquitto's clients need for TLS to our broker as `id`. */
export function mosqTls(port: number, id: TlsIdentity): string[] {
  return [
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '--cafile',
    id.ca,
    ...(id.cert ? ['--cert', id.cert] : []),
    ...(id.key ? ['--key', id.key] : []),
    '--tls-version',
    'tlsv1.3',
  ];
}

/** Runs mosquitto_sub/mosquitto_pub to completion (bounded) and returns its exit status and output. */
export async function mosq(
  bin: 'mosquitto_sub' | 'mosquitto_pub',
  args: readonly string[],
  timeoutMs = 15_000,
): Promise<{ code: number | null; out: string; proc: Spawned }> {
  const proc = spawnProcess(bin, args, { name: bin });
  const timer = setTimeout(() => void proc.kill('SIGKILL'), timeoutMs);
  const exit = await proc.exited;
  clearTimeout(timer);
  return { code: exit.code, out: proc.output(), proc };
}

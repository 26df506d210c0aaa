/**
 * Broker configuration: one schema for defaults, file, environment and overrides; frozen; bad
 * values are typed `config` errors (I9); plain TCP never leaves loopback.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  brokerConfig,
  configDocs,
  configFromEnv,
  loadConfig,
  tlsFiles,
  usersFilePath,
} from '../../broker/src/config.js';
import { REPO_ROOT, tmpDir } from '../helpers/index.js';

describe('broker config', () => {
  it('has the documented defaults and is deeply frozen', () => {
    const c = brokerConfig({ certsDir: '/certs' });
    expect(c.prefix).toBe('outpost/v1');
    expect(c.tls).toMatchObject({ enabled: true, port: 8883, passwordRoles: ['scada'] });
    expect(c.plain).toMatchObject({ enabled: false, host: '127.0.0.1', insecureTrustClientId: false });
    expect(c.metrics).toMatchObject({ enabled: true, host: '127.0.0.1', port: 9464 });
    expect(c.limits).toMatchObject({ maxPacketBytes: 262144, maxTopicLevels: 16, maxTopicLength: 256 });
    expect(c.sessions.expiryMs).toBe(30 * 24 * 3600 * 1000);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.limits)).toBe(true);
    expect(() => {
      (c.limits as { maxPacketBytes: number }).maxPacketBytes = 1;
    }).toThrow();
    expect(tlsFiles(c)).toEqual({
      cert: '/certs/broker.crt',
      key: '/certs/broker.key',
      ca: '/certs/ca.crt',
      crl: '/certs/crl.pem',
    });
    expect(usersFilePath(c)).toBe('/certs/users.json');
  });

  it('layers file < environment < overrides', () => {
    const dir = tmpDir('cfg');
    const file = join(dir, 'broker.json');
    writeFileSync(
      file,
      JSON.stringify({ certsDir: '/c', tls: { port: 1111 }, limits: { maxTopicLevels: 8 } }),
    );
    const { config, unknownEnv } = loadConfig({
      file,
      env: {
        OUTPOST_BROKER_TLS_PORT: '2222',
        OUTPOST_BROKER_LIMITS_MAX_PACKET_BYTES: '4096',
        OUTPOST_BROKER_TYPO: '1',
      },
      overrides: { tls: { port: 3333 } },
    });
    expect(config.tls.port).toBe(3333);
    expect(config.limits.maxPacketBytes).toBe(4096);
    expect(config.limits.maxTopicLevels).toBe(8);
    expect(unknownEnv).toEqual(['OUTPOST_BROKER_TYPO']);
  });

  it('reads YAML files and env booleans and arrays', () => {
    const dir = tmpDir('cfg');
    const file = join(dir, 'broker.yaml');
    writeFileSync(file, 'certsDir: /c\nplain:\n  enabled: true\n  port: 0\n');
    const { config } = loadConfig({
      file,
      env: { OUTPOST_BROKER_TLS_PASSWORD_ROLES: 'scada,admin', OUTPOST_BROKER_METRICS_ENABLED: 'false' },
    });
    expect(config.plain.enabled).toBe(true);
    expect(config.tls.passwordRoles).toEqual(['scada', 'admin']);
    expect(config.metrics.enabled).toBe(false);
  });

  it('refuses plain TCP on a non-loopback address', () => {
    expect(() => brokerConfig({ certsDir: '/c', plain: { enabled: true, host: '0.0.0.0' } })).toThrow(
      /not a loopback address/,
    );
    expect(() => brokerConfig({ certsDir: '/c', plain: { enabled: true, host: '192.168.1.5' } })).toThrow(
      expect.objectContaining({ code: 'config' }),
    );
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) {
      expect(brokerConfig({ tls: { enabled: false }, plain: { enabled: true, host } }).plain.host).toBe(host);
    }
  });

  it('refuses bad values with a typed config error', () => {
    const bad: Array<Record<string, unknown>> = [
      { certsDir: '/c', tls: { port: 70000 } },
      { certsDir: '/c', limits: { maxTopicLevels: 500 } },
      { certsDir: '/c', unknownKey: 1 },
      { certsDir: '/c', prefix: 'a/+/b' },
      { tls: { enabled: true } }, // no certificates
      { tls: { enabled: false } }, // no listener
      { certsDir: '/c', tls: { passwordRoles: ['root'] } },
      { certsDir: '/c', rateLimit: { perIpBurst: 10, globalBurst: 5 } },
    ];
    for (const o of bad)
      expect(() => brokerConfig(o), JSON.stringify(o)).toThrow(expect.objectContaining({ code: 'config' }));
    expect(() => configFromEnv({ OUTPOST_BROKER_TLS_PORT: 'abc' })).toThrow(
      expect.objectContaining({ code: 'config' }),
    );
    expect(() => loadConfig({ file: '/nonexistent/broker.json', env: {} })).toThrow(
      expect.objectContaining({ code: 'config' }),
    );
    const dir = tmpDir('cfg');
    writeFileSync(join(dir, 'x.json'), '{not json');
    expect(() => loadConfig({ file: join(dir, 'x.json'), env: {} })).toThrow(
      expect.objectContaining({ code: 'config' }),
    );
  });

  it('generates its documentation table from the schema, and broker/README.md carries it verbatim', () => {
    const doc = configDocs();
    expect(readFileSync(join(REPO_ROOT, 'broker', 'README.md'), 'utf8')).toContain(doc);
    expect(doc).toContain(
      '| `limits.maxPacketBytes` | `OUTPOST_BROKER_LIMITS_MAX_PACKET_BYTES` | `262144` |',
    );
    expect(doc).toContain('OUTPOST_BROKER_PLAIN_INSECURE_TRUST_CLIENT_ID');
  });
});

/**
 * The broker over real TLS 1.3 with certificates from `outpost certs` (openssl), driven by MQTT.js:
 * identities, client-id rules, certificate refusals (foreign CA, expired, revoked + CRL reload without
 * restart), passwords for SCADA, wills, keepalive, the end-to-end command path (DESIGN §2, §5, I8).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revoke } from '../../certs/src/index.js';
import { cleanupTmpDirs, tmpDir, waitFor } from '../helpers/index.js';
import {
  identityFiles,
  makePki,
  type Pki,
  type RunningBroker,
  SCADA_PASSWORD,
  startBroker,
  tlsClient,
  tlsRefused,
} from './support/harness.js';

const CMD_A = 'outpost/v1/site/site-a/cmd';

let pki: Pki;
let b: RunningBroker;

beforeAll(async () => {
  pki = await makePki(tmpDir('pki'));
  b = await startBroker(pki.dir);
});

afterAll(async () => {
  await b?.close();
  cleanupTmpDirs();
});

const port = () => b.ports.tlsPort!;

describe('end to end', () => {
  it('controller publishes a cmd; site-a (clean=false, QoS 1) receives it live and after a reconnect (I1)', async () => {
    const site = await tlsClient(port(), identityFiles(pki.dir, 'site:site-a'), {
      clientId: 'site-a',
      clean: false,
    });
    const got: string[] = [];
    site.on('message', (_t, p) => got.push(p.toString()));
    const granted = await site.subscribeAsync(CMD_A, { qos: 1 });
    expect(granted).toEqual([{ topic: CMD_A, qos: 1 }]);
    const ctl = await tlsClient(port(), identityFiles(pki.dir, 'controller'), {
      clientId: 'controller',
      clean: false,
    });
    await ctl.publishAsync(CMD_A, 'live-1', { qos: 1 });
    await waitFor(() => got.includes('live-1'), { message: 'live delivery' });

    await site.endAsync();
    await ctl.publishAsync(CMD_A, 'queued-1', { qos: 1 });
    await ctl.publishAsync(CMD_A, 'queued-2', { qos: 1 });
    const again = await tlsClient(port(), identityFiles(pki.dir, 'site:site-a'), {
      clientId: 'site-a',
      clean: false,
    });
    const later: string[] = [];
    again.on('message', (_t, p) => later.push(p.toString()));
    await waitFor(() => later.length === 2, { message: 'queued delivery after reconnect' });
    expect(later).toEqual(['queued-1', 'queued-2']);
    expect(
      await b.broker.metrics.value('outpost_broker_connections', { role: 'agent' }),
    ).toBeGreaterThanOrEqual(1);
    expect(
      await b.broker.metrics.value('outpost_broker_messages_received_total', { role: 'controller' }),
    ).toBe(3);
    await again.endAsync();
    await ctl.endAsync();
  });

  it('the controller may use a CN-suffixed client id (controller.ingest) but not a foreign one', async () => {
    const ok = await tlsClient(port(), identityFiles(pki.dir, 'controller'), {
      clientId: 'controller.ingest',
    });
    expect(await ok.subscribeAsync('outpost/v1/site/+/ack', { qos: 1 })).toEqual([
      { topic: 'outpost/v1/site/+/ack', qos: 1 },
    ]);
    await ok.endAsync();
    const before = await b.rejects('client-id');
    const err = await tlsRefused(port(), identityFiles(pki.dir, 'controller'), { clientId: 'controller-x' });
    expect(err.message).toMatch(/Identifier rejected/i);
    expect(await b.rejects('client-id')).toBe(before + 1);
  });
});

describe('identity refusals (each counted and logged with its reason)', () => {
  it('a client id that differs from the certificate CN', async () => {
    const before = await b.rejects('client-id');
    const err = await tlsRefused(port(), identityFiles(pki.dir, 'site:site-a'), { clientId: 'site-b' });
    expect(err.message).toMatch(/Identifier rejected/i);
    expect(await b.rejects('client-id')).toBe(before + 1);
    expect(b.log.find('client-id', { clientId: 'site-b', name: undefined })).not.toHaveLength(0);
  });

  it('a certificate from a foreign CA', async () => {
    const before = await b.rejects('cert-untrusted');
    const foreign = {
      ...identityFiles(pki.foreignDir, 'site:site-a'),
      ca: identityFiles(pki.dir, 'controller').ca,
    };
    const err = await tlsRefused(port(), foreign, { clientId: 'site-a' });
    expect(err.message).toMatch(/Not authorized/i);
    expect(await b.rejects('cert-untrusted')).toBe(before + 1);
    expect(b.log.find('cert-untrusted', { clientId: 'site-a' }).at(-1)?.['detail']).toMatch(
      /UNABLE_TO_VERIFY/,
    );
  });

  it('an expired certificate', async () => {
    const before = await b.rejects('cert-expired');
    const ca = identityFiles(pki.dir, 'controller').ca;
    const err = await tlsRefused(port(), { ca, ...pki.expired }, { clientId: 'site-x' });
    expect(err.message).toMatch(/Not authorized/i);
    expect(await b.rejects('cert-expired')).toBe(before + 1);
    expect(b.log.find('cert-expired', { clientId: 'site-x' })).toHaveLength(1);
  });

  it('no certificate and no password', async () => {
    const before = await b.rejects('no-credentials');
    const err = await tlsRefused(
      port(),
      { ca: identityFiles(pki.dir, 'controller').ca },
      { clientId: 'hmi' },
    );
    expect(err.message).toMatch(/Not authorized/i);
    expect(await b.rejects('no-credentials')).toBe(before + 1);
  });

  it('keepalive 0 (I10 needs a keepalive) is refused', async () => {
    const before = await b.rejects('keepalive');
    const err = await tlsRefused(port(), identityFiles(pki.dir, 'site:site-a'), {
      clientId: 'site-a',
      keepalive: 0,
    });
    expect(err.message).toMatch(/Identifier rejected/i);
    expect(await b.rejects('keepalive')).toBe(before + 1);
  });

  it("an agent's will must be its own status topic", async () => {
    const before = await b.rejects('will-topic');
    const err = await tlsRefused(port(), identityFiles(pki.dir, 'site:site-a'), {
      clientId: 'site-a',
      will: { topic: 'outpost/v1/site/site-b/status', payload: Buffer.from('{}'), qos: 1, retain: true },
    });
    expect(err.message).toMatch(/Not authorized/i);
    expect(await b.rejects('will-topic')).toBe(before + 1);
  });
});

describe('SCADA', () => {
  const ca = () => identityFiles(pki.dir, 'controller').ca;

  it('logs in with username/password over TLS, reads status, sees an agent will, cannot publish', async () => {
    const scada = await tlsClient(
      port(),
      { ca: ca() },
      { clientId: 'hmi', username: 'scada:hmi', password: SCADA_PASSWORD },
    );
    const seen: Array<{ topic: string; body: string }> = [];
    scada.on('message', (topic, p) => seen.push({ topic, body: p.toString() }));
    await scada.subscribeAsync('outpost/v1/site/+/status', { qos: 1 });
    const refused = await scada
      .subscribeAsync('outpost/v1/site/+/cmd', { qos: 1 })
      .catch((e: { packet?: { granted?: number[] } }) => e.packet?.granted);
    expect(refused).toEqual([128]);

    const site = await tlsClient(port(), identityFiles(pki.dir, 'site:site-b'), {
      clientId: 'site-b',
      will: {
        topic: 'outpost/v1/site/site-b/status',
        payload: Buffer.from('{"online":false}'),
        qos: 1,
        retain: true,
      },
    });
    site.stream.destroy(); // abrupt: the broker publishes the will
    await waitFor(
      () => seen.some((m) => m.topic === 'outpost/v1/site/site-b/status' && m.body === '{"online":false}'),
      {
        message: 'will delivered to SCADA',
      },
    );

    const before = await b.rejects('acl-publish');
    const closed = new Promise<void>((resolve) => scada.once('close', () => resolve()));
    scada.publish('outpost/v1/site/site-a/cmd', 'forged', { qos: 1 });
    await closed; // MQTT 3.1.1 cannot NACK a publish: the broker drops the connection
    expect(await b.rejects('acl-publish')).toBe(before + 1);
    expect(b.log.find('acl-publish', { clientId: 'hmi', topic: 'outpost/v1/site/site-a/cmd' })).toHaveLength(
      1,
    );
    scada.end(true);
  });

  it('a wrong password is refused (CONNACK 4) and an agent may not use a password over TLS', async () => {
    const bad = await b.rejects('bad-credentials');
    const e1 = await tlsRefused(
      port(),
      { ca: ca() },
      { clientId: 'hmi', username: 'scada:hmi', password: 'wrong password' },
    );
    expect(e1.message).toMatch(/Bad username or password/i);
    expect(await b.rejects('bad-credentials')).toBe(bad + 1);
    const np = await b.rejects('password-not-allowed');
    const e2 = await tlsRefused(
      port(),
      { ca: ca() },
      { clientId: 'site-a', username: 'agent:site-a', password: SCADA_PASSWORD },
    );
    expect(e2.message).toMatch(/Not authorized/i);
    expect(await b.rejects('password-not-allowed')).toBe(np + 1);
  });
});

describe('ACL through MQTT.js', () => {
  it('a retained command is refused; the controller may not publish acks', async () => {
    const before = await b.rejects('acl-publish');
    for (const [topic, retain] of [
      [CMD_A, true],
      ['outpost/v1/site/site-a/ack', false],
    ] as const) {
      const ctl = await tlsClient(port(), identityFiles(pki.dir, 'controller'), {
        clientId: 'controller.test',
      });
      const closed = new Promise<void>((resolve) => ctl.once('close', () => resolve()));
      ctl.publish(topic, 'x', { qos: 1, retain });
      await closed;
      ctl.end(true);
    }
    expect(await b.rejects('acl-publish')).toBe(before + 2);
  });

  it('admin may subscribe to # and $SYS', async () => {
    const admin = await tlsClient(port(), identityFiles(pki.dir, 'admin'), { clientId: 'admin' });
    const granted = await admin.subscribeAsync(['#', '$SYS/#'], { qos: 0 });
    expect(granted.map((g) => g.qos)).toEqual([0, 0]);
    await admin.endAsync();
  });
});

describe('revocation without restart', () => {
  it('revoke + reloadCrl() disconnects the open connection and refuses the next one', async () => {
    const dir = tmpDir('revoke');
    const local = await makePki(dir);
    const rb = await startBroker(local.dir);
    try {
      const site = await tlsClient(rb.ports.tlsPort!, identityFiles(local.dir, 'site:site-b'), {
        clientId: 'site-b',
      });
      const closed = new Promise<void>((resolve) => site.once('close', () => resolve()));
      const { serial } = await revoke(local.dir, 'site-b');
      const r = await rb.broker.reloadCrl();
      expect(r).toEqual({ revoked: 1, disconnected: 1 });
      await closed;
      expect(rb.log.find('cert-revoked', { clientId: 'site-b', serial })).toHaveLength(1);
      const err = await tlsRefused(rb.ports.tlsPort!, identityFiles(local.dir, 'site:site-b'), {
        clientId: 'site-b',
      });
      expect(err.message).toMatch(/Not authorized/i);
      expect(await rb.rejects('cert-revoked')).toBe(2);
      expect(rb.log.find('cert-revoked').at(-1)?.['detail']).toMatch(/CERT_REVOKED/);
      // site-a is unaffected
      const a = await tlsClient(rb.ports.tlsPort!, identityFiles(local.dir, 'site:site-a'), {
        clientId: 'site-a',
      });
      await a.endAsync();
      expect(await rb.broker.metrics.value('outpost_broker_crl_reloads_total', { result: 'ok' })).toBe(1);
    } finally {
      await rb.close();
    }
  });

  it('the CRL file watcher reloads by itself', async () => {
    const local = await makePki(tmpDir('watch'));
    const rb = await startBroker(local.dir, { tls: { watchCrlMs: 100 } });
    try {
      const site = await tlsClient(rb.ports.tlsPort!, identityFiles(local.dir, 'site:site-a'), {
        clientId: 'site-a',
      });
      const closed = new Promise<void>((resolve) => site.once('close', () => resolve()));
      await revoke(local.dir, 'site-a');
      await closed;
      expect(await rb.rejects('cert-revoked')).toBe(1);
    } finally {
      await rb.close();
    }
  });

  it('a broken CRL keeps the previous material and is reported', async () => {
    const local = await makePki(tmpDir('badcrl'));
    const rb = await startBroker(local.dir);
    try {
      const { writeFileSync } = await import('node:fs');
      writeFileSync(`${local.dir}/crl.pem`, '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
      await expect(rb.broker.reloadCrl()).rejects.toMatchObject({ code: 'tls' });
      expect(await rb.broker.metrics.value('outpost_broker_crl_reloads_total', { result: 'error' })).toBe(1);
      const a = await tlsClient(rb.ports.tlsPort!, identityFiles(local.dir, 'site:site-a'), {
        clientId: 'site-a',
      });
      await a.endAsync();
    } finally {
      await rb.close();
    }
  });
});

describe('metrics endpoint', () => {
  it('serves Prometheus text on loopback with the broker series', async () => {
    const res = await fetch(`http://127.0.0.1:${b.ports.metricsPort}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const name of [
      'outpost_broker_connections{role="agent"}',
      'outpost_broker_rejects_total{reason="acl-subscribe"}',
      'outpost_broker_bytes_received_total',
      'outpost_broker_messages_sent_total',
      'outpost_broker_queued_messages_total',
    ]) {
      expect(text).toContain(name);
    }
    expect((await fetch(`http://127.0.0.1:${b.ports.metricsPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${b.ports.metricsPort}/other`)).status).toBe(404);
  });
});

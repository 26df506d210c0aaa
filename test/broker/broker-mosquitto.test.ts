/**
 * The ACL and the identity checks driven by Mosquitto's own clients (mosquitto_sub / mosquitto_pub,
 * Debian's mosquitto-clients) over TLS 1.3 with client certificates (DESIGN §5, §8). Every refusal
 * must be visible to the client (SUBACK 0x80, CONNACK code, dropped connection), counted in the
 * metrics and logged with the identity, the topic and the reason.
 */
import type { Client } from 'aedes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revoke } from '../../certs/src/index.js';
import { cleanupTmpDirs, spawnProcess, tmpDir, waitFor } from '../helpers/index.js';
import {
  identityFiles,
  makePki,
  mosq,
  mosqTls,
  type Pki,
  type RunningBroker,
  SCADA_PASSWORD,
  startBroker,
} from './support/harness.js';

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

const tls = (who: string) => mosqTls(b.ports.tlsPort!, identityFiles(pki.dir, who));

/** Resolves when `clientId` has had a SUBSCRIBE granted or refused by the broker. */
function subscribed(clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const on = (_subs: unknown, client: Client) => {
      if (client.id === clientId) {
        b.broker.aedes.off('subscribe', on);
        resolve();
      }
    };
    b.broker.aedes.on('subscribe', on);
  });
}

describe('site A is confined to its own topics', () => {
  it("cannot subscribe to site B's cmd (SUBACK failure reported by mosquitto_sub)", async () => {
    const before = await b.rejects('acl-subscribe');
    const r = await mosq('mosquitto_sub', [
      ...tls('site:site-a'),
      '-i',
      'site-a',
      '-t',
      'outpost/v1/site/site-b/cmd',
      '-q',
      '1',
      '-E',
      '-W',
      '5',
    ]);
    expect(r.out).toContain('All subscription requests were denied');
    expect(await b.rejects('acl-subscribe')).toBe(before + 1);
    expect(
      b.log.find('acl-subscribe', { clientId: 'site-a', topic: 'outpost/v1/site/site-b/cmd' }),
    ).toHaveLength(1);
  });

  it('cannot subscribe to # or to every site with a wildcard', async () => {
    for (const filter of ['#', 'outpost/v1/site/+/cmd', 'outpost/v1/#', 'outpost/v1/site/+/+']) {
      const before = await b.rejects('acl-subscribe');
      const r = await mosq('mosquitto_sub', [
        ...tls('site:site-a'),
        '-i',
        'site-a',
        '-t',
        filter,
        '-E',
        '-W',
        '5',
      ]);
      expect(r.out, filter).toContain('All subscription requests were denied');
      expect(await b.rejects('acl-subscribe'), filter).toBe(before + 1);
      expect(b.log.find('acl-subscribe', { clientId: 'site-a', topic: filter }), filter).toHaveLength(1);
    }
  });

  it("cannot publish site B's ack: B's ack subscriber never sees it, the refusal is counted", async () => {
    const ready = subscribed('controller');
    const sub = spawnProcess(
      'mosquitto_sub',
      [
        ...tls('controller'),
        '-i',
        'controller',
        '-t',
        'outpost/v1/site/site-b/ack',
        '-q',
        '1',
        '-v',
        '-W',
        '6',
      ],
      { name: 'mosquitto_sub:controller' },
    );
    await ready;
    const before = await b.rejects('acl-publish');
    const forged = await mosq('mosquitto_pub', [
      ...tls('site:site-a'),
      '-i',
      'site-a',
      '-t',
      'outpost/v1/site/site-b/ack',
      '-m',
      'forged-by-a',
      '-q',
      '1',
    ]);
    expect(forged.code).not.toBe(0);
    // positive control: B's own ack does arrive, so the subscriber was listening
    const genuine = await mosq('mosquitto_pub', [
      ...tls('site:site-b'),
      '-i',
      'site-b',
      '-t',
      'outpost/v1/site/site-b/ack',
      '-m',
      'genuine-from-b',
      '-q',
      '1',
    ]);
    expect(genuine.code).toBe(0);
    await sub.waitForOutput('genuine-from-b', { timeoutMs: 5000 });
    // the forged publish went first, so had it been forwarded it would be here already
    await sub.kill('SIGTERM');
    expect(sub.stdout()).not.toContain('forged-by-a');
    expect(await b.rejects('acl-publish')).toBe(before + 1);
    expect(
      b.log.find('acl-publish', { clientId: 'site-a', topic: 'outpost/v1/site/site-b/ack' }),
    ).toHaveLength(1);
  });
});

describe('SCADA is read-only', () => {
  it('cannot publish, with a certificate or with a password', async () => {
    const before = await b.rejects('acl-publish');
    const withCert = await mosq('mosquitto_pub', [
      ...tls('scada:hmi'),
      '-i',
      'hmi',
      '-t',
      'outpost/v1/site/site-a/status',
      '-m',
      '{}',
      '-q',
      '1',
    ]);
    expect(withCert.code).not.toBe(0);
    const ca = identityFiles(pki.dir, 'controller').ca;
    const withPassword = await mosq('mosquitto_pub', [
      ...mosqTls(b.ports.tlsPort!, { ca }),
      '-i',
      'hmi.panel',
      '-u',
      'scada:hmi',
      '-P',
      SCADA_PASSWORD,
      '-t',
      'outpost/v1/site/site-a/cmd',
      '-m',
      'x',
      '-q',
      '1',
    ]);
    expect(withPassword.code).not.toBe(0);
    expect(await b.rejects('acl-publish')).toBe(before + 2);
    expect(b.log.find('acl-publish', { role: 'scada', topic: 'outpost/v1/site/site-a/cmd' })).toHaveLength(1);
  });

  it('may read status and Sparkplug topics', async () => {
    const r = await mosq('mosquitto_sub', [
      ...tls('scada:hmi'),
      '-i',
      'hmi',
      '-t',
      'outpost/v1/site/+/status',
      '-t',
      'spBv1.0/#',
      '-E',
      '-W',
      '5',
    ]);
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('denied');
  });
});

describe('refused at CONNECT (reported by the Mosquitto client, counted, logged)', () => {
  const connect = (args: string[]) =>
    mosq('mosquitto_sub', [...args, '-t', 'outpost/v1/site/site-a/cmd', '-E', '-W', '5']);

  it('a client id that differs from the certificate CN', async () => {
    const before = await b.rejects('client-id');
    const r = await connect([...tls('site:site-a'), '-i', 'site-b']);
    expect(r.out).toContain('identifier rejected');
    expect(await b.rejects('client-id')).toBe(before + 1);
    expect(b.log.find('client-id', { clientId: 'site-b' }).at(-1)?.['detail']).toMatch(/not agent site-a/);
  });

  it('a certificate from a foreign CA', async () => {
    const before = await b.rejects('cert-untrusted');
    const foreign = identityFiles(pki.foreignDir, 'site:site-a');
    const r = await connect([
      ...mosqTls(b.ports.tlsPort!, { ...foreign, ca: identityFiles(pki.dir, 'controller').ca }),
      '-i',
      'site-a',
    ]);
    expect(r.out).toContain('not authorised');
    expect(await b.rejects('cert-untrusted')).toBe(before + 1);
  });

  it('an expired certificate', async () => {
    const before = await b.rejects('cert-expired');
    const r = await connect([
      ...mosqTls(b.ports.tlsPort!, { ca: identityFiles(pki.dir, 'controller').ca, ...pki.expired }),
      '-i',
      'site-x',
    ]);
    expect(r.out).toContain('not authorised');
    expect(await b.rejects('cert-expired')).toBe(before + 1);
    expect(b.log.find('cert-expired', { clientId: 'site-x' })).toHaveLength(1);
  });

  it('a revoked certificate, after revoke and a CRL reload without restart', async () => {
    const local = await makePki(tmpDir('revoked'));
    const rb = await startBroker(local.dir);
    try {
      const args = (who: string) => mosqTls(rb.ports.tlsPort!, identityFiles(local.dir, who));
      const ok = await mosq('mosquitto_sub', [
        ...args('site:site-b'),
        '-i',
        'site-b',
        '-t',
        'outpost/v1/site/site-b/cmd',
        '-E',
        '-W',
        '5',
      ]);
      expect(ok.code).toBe(0);
      await revoke(local.dir, 'site:site-b');
      await rb.broker.reloadCrl();
      const r = await mosq('mosquitto_sub', [
        ...args('site:site-b'),
        '-i',
        'site-b',
        '-t',
        'outpost/v1/site/site-b/cmd',
        '-E',
        '-W',
        '5',
      ]);
      expect(r.out).toContain('not authorised');
      expect(await rb.rejects('cert-revoked')).toBe(1);
      expect(rb.log.find('cert-revoked', { clientId: 'site-b' })).toHaveLength(1);
    } finally {
      await rb.close();
    }
  });
});

describe('TLS 1.3 only', () => {
  // mosquitto's --tls-version only disables older versions, so openssl s_client forces TLS 1.2 here.
  it('a TLS 1.2 client fails the handshake; the failure is counted', async () => {
    const before = await b.rejects('tls-handshake');
    const ca = identityFiles(pki.dir, 'controller').ca;
    const proc = spawnProcess(
      'openssl',
      ['s_client', '-tls1_2', '-CAfile', ca, '-connect', `127.0.0.1:${b.ports.tlsPort}`],
      {
        name: 'openssl-s_client',
      },
    );
    const exit = await proc.exited;
    expect(exit.code).not.toBe(0);
    expect(proc.output()).toMatch(/alert|handshake failure|protocol version/i);
    await waitFor(async () => (await b.rejects('tls-handshake')) === before + 1, {
      message: 'handshake refusal counted',
    });
    // and TLS 1.3 with the same tool works
    const ok = spawnProcess(
      'openssl',
      ['s_client', '-tls1_3', '-CAfile', ca, '-connect', `127.0.0.1:${b.ports.tlsPort}`],
      {
        name: 'openssl-s_client-13',
      },
    );
    await ok.waitForOutput(/Verify return code: 0/);
    await ok.kill('SIGTERM');
  });
});

describe('end to end with Mosquitto clients', () => {
  it('controller publishes a cmd while site-a is offline; site-a (clean=false, QoS 1) receives it', async () => {
    const cmd = 'outpost/v1/site/site-a/cmd';
    // establish the persistent session and its subscription, then go away
    const first = await mosq('mosquitto_sub', [
      ...tls('site:site-a'),
      '-i',
      'site-a',
      '-c',
      '-q',
      '1',
      '-t',
      cmd,
      '-E',
      '-W',
      '5',
    ]);
    expect(first.code).toBe(0);
    const pub = await mosq('mosquitto_pub', [
      ...tls('controller'),
      '-i',
      'controller',
      '-t',
      cmd,
      '-m',
      'apply-stack-7',
      '-q',
      '1',
    ]);
    expect(pub.code).toBe(0);
    const second = await mosq('mosquitto_sub', [
      ...tls('site:site-a'),
      '-i',
      'site-a',
      '-c',
      '-q',
      '1',
      '-t',
      cmd,
      '-C',
      '1',
      '-v',
      '-W',
      '5',
    ]);
    expect(second.code).toBe(0);
    expect(second.out).toContain(`${cmd} apply-stack-7`);
    await waitFor(
      async () =>
        (await b.broker.metrics.value('outpost_broker_messages_sent_total', { role: 'agent' })) >= 1,
    );
  });
});

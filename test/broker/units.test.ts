/**
 * Small broker parts in isolation: the MQTT fixed-header framer (packet-size limit before
 * buffering, I8/I9), the connection-rate token buckets, the CRL reader, and password users.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { revokedSerials } from '../../broker/src/crl.js';
import { MqttFramer } from '../../broker/src/guarded-connection.js';
import { ConnectionRateLimiter, TokenBucket } from '../../broker/src/rate-limit.js';
import { RefusalLog } from '../../broker/src/refusal-log.js';
import { addUser, listUsers, removeUser, UserStore } from '../../broker/src/users.js';
import { certsLayout, initCerts, issueSiteCert, revoke } from '../../certs/src/index.js';
import { tmpDir } from '../helpers/index.js';
import { captureLog, FAST_SCRYPT } from './support/harness.js';
import { connectPacket, publishPacket } from './support/raw-mqtt.js';

describe('MqttFramer', () => {
  it('counts packets across arbitrary chunk boundaries', () => {
    const seen: Array<[number, number]> = [];
    const f = new MqttFramer(1 << 20, (type, bytes) => seen.push([type, bytes]));
    const stream = Buffer.concat([
      connectPacket('site-a'),
      publishPacket('t', Buffer.alloc(300)),
      Buffer.from([0xc0, 0x00]),
    ]);
    for (let i = 0; i < stream.length; i += 7) expect(f.feed(stream.subarray(i, i + 7))).toBeUndefined();
    expect(seen.map(([t]) => t)).toEqual([1, 3, 12]);
    expect(seen[1]![1]).toBe(publishPacket('t', Buffer.alloc(300)).length);
  });

  it('refuses an oversized packet from its header alone', () => {
    const f = new MqttFramer(1000, () => undefined);
    const big = publishPacket('t', Buffer.alloc(5000));
    expect(f.feed(big.subarray(0, 3))).toMatchObject({ reason: 'packet-too-large' });
  });

  it('refuses reserved types and over-long lengths', () => {
    expect(new MqttFramer(1000, () => undefined).feed(Buffer.from([0x00]))).toMatchObject({
      reason: 'malformed-packet',
    });
    expect(new MqttFramer(1000, () => undefined).feed(Buffer.from([0xf0]))).toMatchObject({
      reason: 'malformed-packet',
    });
    expect(
      new MqttFramer(1 << 30, () => undefined).feed(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80])),
    ).toMatchObject({
      reason: 'malformed-packet',
    });
  });
});

describe('refusal log', () => {
  it('logs at most a burst per reason per window, then summarises', () => {
    const log = captureLog();
    const r = new RefusalLog(log.logger, 3, 60_000);
    for (let i = 0; i < 10; i++) r.warn('rate-limited', { i }, 'connection refused');
    r.warn('acl-publish', {}, 'publish refused');
    expect(log.find('rate-limited')).toHaveLength(3);
    expect(log.find('acl-publish')).toHaveLength(1);
  });
});

describe('rate limiting', () => {
  it('a token bucket refills at its rate up to its burst', () => {
    const b = new TokenBucket(2, 1, 0);
    expect([b.take(0), b.take(0), b.take(0)]).toEqual([true, true, false]);
    expect(b.take(500)).toBe(false);
    expect(b.take(1000)).toBe(true);
    expect(b.full(10_000)).toBe(true);
  });

  it('limits per IP and globally, with a bounded IP table', () => {
    let now = 0;
    const l = new ConnectionRateLimiter(
      { perIpBurst: 2, perIpPerSec: 1, globalBurst: 3, globalPerSec: 1, maxTrackedIps: 16 },
      () => now,
    );
    expect([l.allow('a'), l.allow('a'), l.allow('a')]).toEqual(['ok', 'ok', 'per-ip']);
    expect([l.allow('b'), l.allow('c')]).toEqual(['ok', 'global']);
    now += 10_000;
    for (let i = 0; i < 100; i++) {
      now += 1000;
      l.allow(`10.0.0.${i}`);
    }
    expect(l.trackedIps).toBeLessThanOrEqual(16);
  });
});

describe('CRL reader', () => {
  it('lists exactly the serials openssl revoked', async () => {
    const dir = join(tmpDir('crl'), 'certs');
    await initCerts(dir);
    const a = await issueSiteCert(dir, 'site-a');
    await issueSiteCert(dir, 'site-b');
    const l = certsLayout(dir);
    expect(revokedSerials(readFileSync(l.crl, 'utf8')).size).toBe(0);
    await revoke(dir, 'site-a');
    const set = revokedSerials(readFileSync(l.crl, 'utf8'));
    expect([...set]).toEqual([a.serial.replace(/^0+/, '')]);
  });

  it('throws on garbage instead of returning a partial list (I9)', () => {
    expect(() => revokedSerials('nothing here')).toThrow(/no PEM/);
    expect(() => revokedSerials('-----BEGIN X509 CRL-----\nMAMCAQ==\n-----END X509 CRL-----')).toThrow();
    expect(() => revokedSerials('-----BEGIN X509 CRL-----\nMIIBAAAA\n-----END X509 CRL-----')).toThrow();
  });
});

describe('password users', () => {
  it('adds, verifies, lists and removes scrypt users in a 0600 file', async () => {
    const file = join(tmpDir('users'), 'users.json');
    expect(
      await addUser(file, { role: 'scada', name: 'hmi', password: 'p4ssword-1', scrypt: FAST_SCRYPT }),
    ).toBe('scada:hmi');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readFileSync(file, 'utf8')).not.toContain('p4ssword-1');
    const store = await UserStore.open(file);
    expect(await store.verify('scada:hmi', Buffer.from('p4ssword-1'))).toEqual({
      role: 'scada',
      name: 'hmi',
    });
    expect(await store.verify('scada:hmi', Buffer.from('p4ssword-2'))).toBeUndefined();
    expect(await store.verify('scada:nobody', Buffer.from('p4ssword-1'))).toBeUndefined();
    await expect(addUser(file, { role: 'scada', name: 'hmi', password: 'other-pass' })).rejects.toMatchObject(
      {
        code: 'user-exists',
      },
    );
    await addUser(file, {
      role: 'scada',
      name: 'hmi',
      password: 'other-pass',
      force: true,
      scrypt: FAST_SCRYPT,
    });
    await store.reload();
    expect(await store.verify('scada:hmi', 'other-pass')).toEqual({ role: 'scada', name: 'hmi' });
    expect(await listUsers(file)).toEqual([{ role: 'scada', name: 'hmi' }]);
    expect(await removeUser(file, 'scada', 'hmi')).toBe(true);
    expect(await listUsers(file)).toEqual([]);
  });

  it('refuses bad names, roles, passwords and malformed files with typed errors', async () => {
    const file = join(tmpDir('users'), 'users.json');
    await expect(
      addUser(file, { role: 'scada', name: 'Bad Name', password: 'longenough' }),
    ).rejects.toMatchObject({
      code: 'invalid-user',
    });
    await expect(
      addUser(file, { role: 'root' as 'scada', name: 'x', password: 'longenough' }),
    ).rejects.toMatchObject({
      code: 'invalid-user',
    });
    await expect(addUser(file, { role: 'scada', name: 'x', password: 'short' })).rejects.toMatchObject({
      code: 'invalid-user',
    });
    writeFileSync(file, '{"v":1,"users":{"scada:x":{"role":"agent","name":"x"}}}');
    await expect(UserStore.open(file)).rejects.toMatchObject({ code: 'users-file' });
    writeFileSync(file, 'not json');
    await expect(UserStore.open(file)).rejects.toMatchObject({ code: 'users-file' });
    expect((await UserStore.open(join(tmpDir('users'), 'absent.json'))).size).toBe(0);
  });
});

/**
 * `outpost certs` command line: output, exit codes (0 ok, 1 failed operation, 64 usage), and the
 * SCADA password read from the environment rather than from argv.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { UserStore } from '../../broker/src/users.js';
import { run } from '../../certs/src/cli.js';
import { certsLayout } from '../../certs/src/index.js';
import { openTrustRoot } from '../../protocol/src/index.js';
import { tmpDir } from '../helpers/index.js';

function io() {
  let out = '';
  let err = '';
  return {
    io: {
      out: (s: string) => {
        out += s;
      },
      err: (s: string) => {
        err += s;
      },
    },
    out: () => out,
    err: () => err,
  };
}

afterEach(() => {
  delete process.env['OUTPOST_PASSWORD'];
});

describe('outpost certs', () => {
  it('init, site, scada --password, revoke, crl, rotate-trust', async () => {
    const dir = join(tmpDir('cli'), 'pki');
    const a = io();
    expect(
      await run(['init', '--dir', dir, '--roots', '2', '--threshold', '1', '--san', 'mqtt.local'], a.io),
    ).toBe(0);
    expect(a.out()).toMatch(/trust root v1: .*trust-root-v1\.cbor/);
    expect(a.out()).toContain('key ctl-1: stack.apply');

    const s = io();
    expect(await run(['site', 'plant-9', '--dir', dir], s.io)).toBe(0);
    const b64 = /uplink public key \(base64\): (\S+)/.exec(s.out())?.[1];
    expect(Buffer.from(b64!, 'base64')).toHaveLength(32);
    expect(s.out()).toContain('-----BEGIN PUBLIC KEY-----');

    process.env['OUTPOST_PASSWORD'] = 'from-the-env-1';
    const p = io();
    expect(await run(['scada', 'hmi', '--dir', dir, '--password'], p.io)).toBe(0);
    expect(p.out()).toContain('password user: scada:hmi');
    const users = await UserStore.open(certsLayout(dir).usersFile);
    expect(await users.verify('scada:hmi', 'from-the-env-1')).toBeDefined();

    const r = io();
    expect(await run(['revoke', 'plant-9', '--dir', dir], r.io)).toBe(0);
    expect(r.out()).toMatch(/revoked .*site\.crt \(serial [0-9A-F]+\)/);
    const again = io();
    expect(await run(['revoke', 'plant-9', '--dir', dir], again.io)).toBe(1);
    expect(again.err()).toContain('already revoked');

    expect(await run(['crl', '--dir', dir, '--crl-days', '30'], io().io)).toBe(0);

    const t = io();
    expect(await run(['rotate-trust', '--dir', dir, '--rotate-signing'], t.io)).toBe(0);
    expect(t.out()).toContain('trust root v2');
    expect(openTrustRoot(new Uint8Array(readFileSync(certsLayout(dir).trustRoot))).ver).toBe(2);
  });

  it('usage errors exit 64; failed operations exit 1 with the typed error', async () => {
    const h = io();
    expect(await run([], h.io)).toBe(64);
    expect(h.out()).toContain('usage: outpost certs');
    expect(await run(['bogus'], io().io)).toBe(64);
    expect(await run(['init', '--roots', 'many', '--dir', tmpDir('x')], io().io)).toBe(64);
    expect(await run(['site', '--dir', tmpDir('x')], io().io)).toBe(64);
    expect(await run(['site', 'a', 'b', '--dir', tmpDir('x')], io().io)).toBe(64);
    expect(await run(['init', '--nope'], io().io)).toBe(64);
    const missing = io();
    expect(await run(['site', 'plant-1', '--dir', join(tmpDir('x'), 'empty')], missing.io)).toBe(1);
    expect(missing.err()).toMatch(/not-found: .*ca\.key is missing/);
    const bad = io();
    expect(await run(['site', 'Bad_Name', '--dir', tmpDir('x')], bad.io)).toBe(1);
    expect(bad.err()).toContain('invalid-name');
  });
});

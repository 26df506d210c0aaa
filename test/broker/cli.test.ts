/**
 * `outpost broker`: argument and configuration errors exit non-zero with a clear message; a real
 * child process starts, reloads its CRL on SIGHUP (disconnecting a revoked site without a restart)
 * and shuts down gracefully on SIGTERM.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { run } from '../../broker/src/cli.js';
import { revoke } from '../../certs/src/index.js';
import { spawnNode, tmpDir, waitFor } from '../helpers/index.js';
import { identityFiles, makePki, tlsClient } from './support/harness.js';

const ENTRY = 'test/broker/support/broker-cli-entry.ts';

function capture() {
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

describe('outpost broker (in-process run)', () => {
  it('prints usage and the config table', async () => {
    const c = capture();
    expect(await run(['--help'], c.io)).toBe(0);
    expect(c.out()).toContain('usage: outpost broker');
    const d = capture();
    expect(await run(['--help-config'], d.io)).toBe(0);
    expect(d.out()).toContain('OUTPOST_BROKER_TLS_PORT');
  });

  it('bad usage exits 64, bad configuration 78, each with a message', async () => {
    const a = capture();
    expect(await run(['--bogus'], a.io)).toBe(64);
    expect(a.err()).toMatch(/Unknown option '--bogus'/);
    const b = capture();
    expect(await run(['--port', 'x'], b.io)).toBe(64);
    const c = capture();
    expect(await run(['--no-tls'], c.io)).toBe(78);
    expect(c.err()).toMatch(/no listener/);
    const d = capture();
    expect(
      await run(['--certs', '/nonexistent/certs', '--tls-port', '0', '--no-metrics'], {
        ...d.io,
        log: pino({ level: 'silent' }),
      }),
    ).toBe(78);
    expect(d.err()).toMatch(/cannot read certificate/);
    const e = capture();
    const file = join(tmpDir('cfg'), 'bad.json');
    writeFileSync(
      file,
      JSON.stringify({ plain: { enabled: true, host: '0.0.0.0' }, tls: { enabled: false } }),
    );
    expect(await run(['--config', file], e.io)).toBe(78);
    expect(e.err()).toMatch(/not a loopback address/);
  });

  it('runs until aborted and then closes cleanly', async () => {
    const ac = new AbortController();
    const done = run(['--no-tls', '--plain-port', '0', '--insecure-trust-client-id', '--metrics-port', '0'], {
      signal: ac.signal,
      log: pino({ level: 'silent' }),
    });
    ac.abort();
    expect(await done).toBe(0);
  });
});

describe('outpost broker (child process)', () => {
  it('SIGHUP reloads the CRL and drops a revoked site; SIGTERM exits 0', async () => {
    const pki = await makePki(tmpDir('pki'));
    const proc = spawnNode(
      ENTRY,
      [
        '--certs',
        pki.dir,
        '--data',
        tmpDir('data'),
        '--tls-port',
        '0',
        '--tls-host',
        '127.0.0.1',
        '--metrics-port',
        '0',
      ],
      { OUTPOST_BROKER_TLS_WATCH_CRL_MS: '0' },
    );
    const line = await proc.waitForOutput('broker listening', { timeoutMs: 20_000 });
    const { tlsPort, metricsPort, persistence } = JSON.parse(line) as {
      tlsPort: number;
      metricsPort: number;
      persistence: string;
    };
    expect(persistence).toBe('sqlite');
    const site = await tlsClient(tlsPort, identityFiles(pki.dir, 'site:site-b'), { clientId: 'site-b' });
    const closed = new Promise<void>((resolve) => site.once('close', () => resolve()));
    await revoke(pki.dir, 'site-b');
    proc.child.kill('SIGHUP');
    await closed;
    await proc.waitForOutput('CRL reloaded');
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/outpost_broker_rejects_total\{reason="cert-revoked"\} 1/);
    const exit = await proc.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(proc.output()).toContain('broker closed');
    await waitFor(() => proc.exitInfo !== undefined);
  });

  it('exits 78 with a message on a bad config file', async () => {
    const file = join(tmpDir('cfg'), 'broker.json');
    writeFileSync(file, '{"limits": {"maxPacketBytes": "big"}}');
    const proc = spawnNode(ENTRY, ['--config', file]);
    const exit = await proc.exited;
    expect(exit.code).toBe(78);
    expect(proc.stderr()).toMatch(/outpost broker: config: .*maxPacketBytes/);
  });
});

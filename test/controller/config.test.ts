/** Configuration (one TypeBox schema: defaults < file < env < flags) and the `outpost controller` CLI. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { run } from '../../controller/src/cli.js';
import { configDocs, loadConfig } from '../../controller/src/config.js';
import { tmpDir } from '../helpers/index.js';

async function capture(fn: () => Promise<number>): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await fn(), out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

describe('controller config', () => {
  it('applies defaults, then the file, then the environment, then flags', () => {
    const dir = tmpDir('cfg');
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'api:\n  port: 9000\n  host: 0.0.0.0\noutbox:\n  window: 2\n');
    const c = loadConfig({
      file,
      env: { OUTPOST_API_PORT: '9001', OUTPOST_WINDOW: '3' },
      overrides: { api: { port: 9002 } },
    });
    expect(c.api).toEqual({ host: '0.0.0.0', port: 9002, bodyLimit: 1024 * 1024 });
    expect(c.outbox.window).toBe(3);
    expect(c.outbox.retryMs).toBe(30_000);
    expect(c.mqtt).toMatchObject({
      url: 'mqtts://127.0.0.1:8883',
      clientId: 'controller',
      prefix: 'outpost/v1',
    });
    expect(Object.isFrozen(c.outbox)).toBe(true);
  });

  it('names the bad key of an invalid config', () => {
    expect(() => loadConfig({ env: { OUTPOST_WINDOW: 'many' } })).toThrow(/outbox\.window/);
    expect(() => loadConfig({ overrides: { api: { prt: 1 } } as never })).toThrow(
      /api\.prt: Unexpected property/,
    );
    expect(() => loadConfig({ file: '/nonexistent/c.yaml' })).toThrow(/cannot read/);
  });

  it('documents every key with its environment variable', () => {
    const doc = configDocs();
    expect(doc).toContain('| `outbox.window` | integer | `4` | `OUTPOST_WINDOW` |');
    expect(doc).toContain('`OUTPOST_ADMIN_TOKEN`');
  });
});

describe('outpost controller CLI', () => {
  it('prints usage and the config reference; rejects bad flags and configs', async () => {
    expect(await capture(() => run(['--help']))).toMatchObject({
      code: 0,
      out: expect.stringContaining('usage: outpost controller'),
    });
    expect(await capture(() => run(['config-docs']))).toMatchObject({
      code: 0,
      out: expect.stringContaining('| `mqtt.url` |'),
    });
    expect((await capture(() => run(['--bogus']))).code).toBe(64);
    expect((await capture(() => run(['--port', 'x']))).code).toBe(64);
    const bad = await capture(() => run(['--config', '/nonexistent.yaml']));
    expect(bad.code).toBe(78);
    expect(bad.err).toContain('cannot read');
    // No signing key in an empty certs dir: a clear configuration error, exit 78.
    const dir = tmpDir('cli');
    const nokey = await capture(() => run(['--data', join(dir, 'data'), '--certs', join(dir, 'certs')]));
    expect(nokey.code).toBe(78);
    expect(nokey.err).toMatch(/no signing key/);
  });
});

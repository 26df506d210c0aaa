/**
 * `outpost envelope inspect|sign` end to end, as a child process (cli/main.ts -> cli/envelope.ts):
 * dispatch, stdin/stdout/stderr, files, exit codes. Each child costs ~1 s of CPU, so the exhaustive
 * matrix of rejections and bad inputs runs in-process in envelope-cli-run.test.ts.
 * Exit codes: 0 ok, 64 usage, 65 malformed/too-large/unknown-type, 66 bad-signature/unknown-key,
 * 67 expired/not-yet-valid, 68 wrong-site, 1 other.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, it } from 'vitest';
import {
  type CliFiles,
  cliFiles,
  inspectArgs as inspect,
  parseJson as json,
  signArgs as sign,
} from './cli-fixtures.js';
import { runCli } from './cli-run.js';
import { IAT, NOW } from './helpers.js';

const files: CliFiles = cliFiles({ openssl: true });
const f = files.f;
afterAll(() => files.cleanup());

// Children queue for a few slots (cli-run.ts), so a test's time includes its wait: allow for a loaded machine.
describe.concurrent('outpost envelope (child process)', { timeout: 180_000 }, () => {
  it('--help prints the usage; an unknown subcommand exits 64', async ({ expect }) => {
    const [help, bogus] = await Promise.all([runCli(['envelope', '--help']), runCli(['envelope', 'bogus'])]);
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/inspect .*\n.*sign/s);
    expect(bogus.code).toBe(64);
    expect(bogus.stderr).toMatch(/unknown subcommand 'bogus'/);
  });

  it('sign writes hex to stdout; inspect reads it from stdin and verifies it against the trust root', async ({
    expect,
  }) => {
    const s = await runCli(sign(['--key', f('ctl.key'), '--type', 'heartbeat', '--body', '{"last":7}']));
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
    expect(s.out).toMatch(/^d284[0-9a-f]+\n$/);
    const i = await runCli(
      inspect('--trust', f('trust-v1.cbor'), '--site', 'plant-01', '--now', String(NOW), '-'),
      s.out,
    );
    expect(i.stderr).toBe('');
    expect(i.code).toBe(0);
    const out = json(i.out);
    expect(out).toMatchObject({ kind: 'command', kid: 'ctl-1', valid: true, encoding: 'hex' });
    expect(out.protected).toEqual({ alg: -8, kid: 'ctl-1' });
    expect(out.payload).toMatchObject({ v: 1, site: 'plant-01', seq: 7, prev: 6, iat: IAT, exp: IAT + 3600 });
  });

  it('an openssl genpkey key signs stack.apply with a JSON spec to --out; inspect --key shows the spec', async ({
    expect,
  }) => {
    const spec = { svc: { web: { img: 'registry.local/web', dig: { $hex: 'cd'.repeat(32) } } } };
    const body = JSON.stringify({ stack: 'web', rev: 2, spec });
    const s = await runCli([
      ...sign(['--key', f('openssl.key'), '--kid', 'ops.1', '--type', 'stack.apply', '--body', body]),
      ...['--no-deflate', '--id', 'ab'.repeat(16), '--out', f('apply.cbor')],
    ]);
    expect(s.stderr).toBe('');
    expect(s.code).toBe(0);
    expect(s.out).toBe('');
    expect(readFileSync(f('apply.cbor'))[0]).toBe(0xd2);
    const i = await runCli(inspect('--key', f('openssl.pub'), '--now', String(NOW), f('apply.cbor')));
    expect(i.code).toBe(0);
    const out = json(i.out);
    expect(out).toMatchObject({ valid: true, encoding: 'raw', kid: 'ops.1' });
    expect(out.spec).toEqual(spec);
    const payload = out.payload as { id: unknown; body: Record<string, unknown> };
    expect(payload.id).toEqual({ $hex: 'ab'.repeat(16) });
    expect(payload.body.z).toBeUndefined();
  });

  it.for([
    [
      'wrong-site',
      68,
      inspect('--trust', f('trust-v1.cbor'), '--site', 'plant-02', '--now', String(NOW), f('hb.hex')),
    ],
    ['expired', 67, inspect('--trust', f('trust-v1.cbor'), '--now', String(IAT + 3600), f('hb.cbor'))],
    ['bad-signature', 66, inspect('--key', f('other.pub'), '--no-expiry', f('hb.cbor'))],
    ['malformed', 65, inspect(f('garbage.txt'))],
  ] as const)(
    'inspect rejects with %s, exit %i: reason in the JSON and on stderr',
    async ([reason, code, args], { expect }) => {
      const r = await runCli([...args]);
      expect(r.code).toBe(code);
      expect(json(r.out)).toMatchObject({ valid: false, reason });
      expect(r.stderr).toContain(`${reason}:`);
    },
  );

  it('sign: a body that breaks the schema is a typed error (65); a missing option is usage (64)', async ({
    expect,
  }) => {
    const [bad, usage] = await Promise.all([
      runCli(sign(['--key', f('ctl.key'), '--type', 'heartbeat', '--body', '{"last":-1}'])),
      runCli(['envelope', 'sign', '--key', f('ctl.key'), '--site', 's', '--type', 'heartbeat', '--seq', '1']),
    ]);
    expect(bad.code).toBe(65);
    expect(bad.stderr).toMatch(/malformed: heartbeat body/);
    expect(bad.out).toBe('');
    expect(usage.code).toBe(64);
    expect(usage.stderr).toMatch(/--kid is required/);
  });

  it('inspect a trust root as the rotation after --trust', async ({ expect }) => {
    const r = await runCli(inspect('--trust', f('trust-v1.cbor'), f('trust-v2.cbor')));
    expect(r.code).toBe(0);
    expect(json(r.out)).toMatchObject({
      kind: 'trust-root',
      valid: true,
      selfSigned: true,
      payload: { ver: 2 },
    });
  });
});

/**
 * The full matrix of `outpost envelope` cases, calling cli/envelope.ts `run()` in-process with
 * stdout/stderr captured (envelope-cli.test.ts covers the same paths end to end as a child process).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { detectEncoding, exitCodeFor, fromJson, parseDuration, run, toJson } from '../../cli/envelope.js';
import {
  encode,
  encodeApproval,
  encodeCommand,
  encodeSpec,
  openCommand,
  REASON_CODES,
  sign1,
  TrustStore,
} from '../../protocol/src/index.js';
import { cliFiles, parseJson as json } from './cli-fixtures.js';
import { approver1, command, controller, IAT, NOW, trustDoc } from './helpers.js';

const files = cliFiles();
const f = files.f;
afterAll(() => files.cleanup());

async function call(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const capture = (sink: string[]) => ((chunk: unknown) => sink.push(String(chunk)) > 0) as never;
  const o = vi.spyOn(process.stdout, 'write').mockImplementation(capture(out));
  const e = vi.spyOn(process.stderr, 'write').mockImplementation(capture(err));
  try {
    const code = await run(args);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}
const sign = (...extra: string[]) =>
  call('sign', '--kid', 'ctl-1', '--site', 'plant-01', '--iat', String(IAT), '--seq', '7', ...extra);
const ctlKey = ['--key', f('ctl.key')];

describe('exit codes and JSON conventions', () => {
  it('exitCodeFor follows the documented mapping for every reason code', () => {
    const want: Record<string, number> = {
      malformed: 65,
      'too-large': 65,
      'unknown-type': 65,
      'unsupported-version': 65,
      'bad-signature': 66,
      'unknown-key': 66,
      'trust-threshold': 66,
      expired: 67,
      'not-yet-valid': 67,
      'wrong-site': 68,
    };
    for (const c of REASON_CODES) expect(exitCodeFor(c)).toBe(want[c] ?? 1);
  });

  it('toJson / fromJson round-trip byte strings as {"$hex"}; fromJson takes {"$b64"}', () => {
    const v = { a: new Uint8Array([1, 255]), b: [{ c: new Uint8Array(0) }], n: 1, s: 'x', t: true, z: null };
    expect(toJson(v)).toEqual({
      a: { $hex: '01ff' },
      b: [{ c: { $hex: '' } }],
      n: 1,
      s: 'x',
      t: true,
      z: null,
    });
    expect(fromJson(toJson(v))).toEqual(v);
    expect(fromJson({ $b64: 'Af8=' })).toEqual(new Uint8Array([1, 255]));
    expect(toJson(2n ** 64n)).toEqual({ $bigint: '18446744073709551616' });
    expect(toJson(new Map([[1, 'a']]))).toEqual({ '1': 'a' });
    expect(fromJson({ $hex: 'ab', other: 1 })).toEqual({ $hex: 'ab', other: 1 }); // not a byte string
    expect(() => fromJson({ $hex: 'abc' })).toThrow(/invalid \$hex/);
    expect(() => fromJson(JSON.parse('{"__proto__": {"x": 1}}'))).toThrow(/__proto__/);
  });

  it('detectEncoding: raw CBOR, hex and base64 with whitespace', () => {
    const raw = encodeCommand(command(), controller);
    expect(detectEncoding(raw).encoding).toBe('raw');
    const h = detectEncoding(new TextEncoder().encode(` ${Buffer.from(raw).toString('hex')}\n`));
    expect(h).toEqual({ bytes: raw, encoding: 'hex' });
    const b = detectEncoding(
      new TextEncoder().encode(
        Buffer.from(raw)
          .toString('base64')
          .replace(/(.{60})/g, '$1\n'),
      ),
    );
    expect(b).toEqual({ bytes: raw, encoding: 'base64' });
    expect(() => detectEncoding(new TextEncoder().encode('not an envelope!'))).toThrow(/neither/);
  });

  it('parseDuration', () => {
    expect([
      parseDuration('90'),
      parseDuration('30s'),
      parseDuration('15m'),
      parseDuration('1h'),
      parseDuration('7d'),
    ]).toEqual([90, 30, 900, 3600, 604_800]);
    expect(() => parseDuration('1w')).toThrow(/invalid duration/);
  });
});

describe('inspect', () => {
  it('--help; usage errors exit 64', async () => {
    expect((await call('inspect', '--help')).out).toMatch(/--no-expiry/);
    expect((await call()).code).toBe(64);
    expect(
      (await call('inspect', '--key', f('ctl.pub'), '--trust', f('trust-v1.cbor'), f('hb.cbor'))).code,
    ).toBe(64);
    expect((await call('inspect', '--now', '1', '--no-expiry', f('hb.cbor'))).code).toBe(64);
    expect((await call('inspect', f('hb.cbor'), f('hb.hex'))).code).toBe(64);
    expect((await call('inspect', '--now', 'soon', f('hb.cbor'))).code).toBe(64);
  });

  it.each([
    ['not-yet-valid', 67, ['--key', f('ctl.pub'), '--now', String(IAT - 2 * 86_400), f('hb.cbor')]],
    ['expired', 67, ['--key', f('ctl.pub'), f('hb.cbor')]],
    ['wrong-site', 68, ['--key', f('ctl.pub'), '--site', 'plant-02', '--no-expiry', f('hb.cbor')]],
    ['bad-signature', 66, ['--key', f('other.pub'), '--no-expiry', f('hb.hex')]],
    ['malformed', 65, [f('truncated.hex')]],
    ['malformed', 65, [f('garbage.txt')]],
    ['too-large', 65, [f('huge.hex')]],
    ['trust-version', 1, ['--trust', f('trust-v1.cbor'), f('trust-v3.cbor')]],
    ['bad-signature', 66, ['--key', f('ctl.pub'), f('trust-v1.cbor')]],
  ] as const)('%s -> exit %i', async (reason, code, args) => {
    const r = await call('inspect', ...args);
    expect(r.code).toBe(code);
    expect(json(r.out)).toMatchObject({ valid: false, reason });
    expect(r.err).toContain(`${reason}:`);
  });

  it('unknown-key: a kid scoped to heartbeats signs stack.remove; a kid not in the trust root (66)', async () => {
    const scoped = await sign(
      '--key',
      f('hb.key'),
      '--kid',
      'hb-1',
      '--type',
      'stack.remove',
      '--body',
      '{"stack":"web"}',
    );
    writeFileSync(f('scoped.hex'), scoped.out);
    const stranger = await sign(
      '--key',
      f('hb.key'),
      '--kid',
      'nobody',
      '--type',
      'heartbeat',
      '--body',
      '{"last":1}',
    );
    writeFileSync(f('stranger.hex'), stranger.out);
    const a = await call('inspect', '--trust', f('trust-v1.cbor'), '--no-expiry', f('scoped.hex'));
    const b = await call('inspect', '--trust', f('trust-v1.cbor'), '--no-expiry', f('stranger.hex'));
    expect([a.code, b.code]).toEqual([66, 66]);
    expect(json(a.out)).toMatchObject({
      reason: 'unknown-key',
      error: expect.stringMatching(/may not sign stack.remove/),
    });
    expect(json(b.out)).toMatchObject({
      reason: 'unknown-key',
      error: expect.stringMatching(/not in trust root/),
    });
    // --key checks everything but scope.
    expect((await call('inspect', '--key', f('ctl.pub'), '--no-expiry', f('scoped.hex'))).code).toBe(66);
  });

  it('acks and state verify with the site key; --trust does not cover them', async () => {
    const a = await call('inspect', '--key', f('site.pub'), '--site', 'plant-01', f('ack.b64'));
    expect(a.code).toBe(0);
    expect(json(a.out)).toMatchObject({ kind: 'ack', kid: 'site:plant-01', valid: true, encoding: 'base64' });
    const s = await call('inspect', '--key', f('site.pub'), f('state.cbor'));
    expect(json(s.out)).toMatchObject({ kind: 'state', valid: true, payload: { full: true } });
    expect((await call('inspect', '--key', f('site.pub'), '--site', 'plant-02', f('state.cbor'))).code).toBe(
      68,
    );
    expect((await call('inspect', '--key', f('ctl.pub'), f('ack.b64'))).code).toBe(66);
    expect((await call('inspect', '--trust', f('trust-v1.cbor'), f('ack.b64'))).code).toBe(64);
  });

  it('without a key: decodes, prints no verdict, exits 0', async () => {
    const r = await call('inspect', f('ack.b64'));
    expect(r.code).toBe(0);
    expect(json(r.out)).not.toHaveProperty('valid');
    expect(json(r.out).payload).toMatchObject({ st: 'applied', seq: 7 });
    const t = await call('inspect', f('trust-v1.cbor'));
    expect(json(t.out)).toMatchObject({ kind: 'trust-root', selfSigned: true, payload: { ver: 1 } });
    expect((json(t.out).signatures as { kid: string }[]).map((s) => s.kid)).toEqual(['root-1']);
    writeFileSync(f('other.cbor'), sign1(encode({ x: 1 }), controller));
    expect(json((await call('inspect', f('other.cbor'))).out)).toMatchObject({
      kind: 'unknown',
      payload: { x: 1 },
    });
  });

  it('approvals: scope approve is required under --trust', async () => {
    const a = { v: 1 as const, stack: 'web', rev: 1, dig: new Uint8Array(32), iat: IAT };
    writeFileSync(f('appr.cbor'), encodeApproval(a, approver1));
    writeFileSync(f('appr-ctl.cbor'), encodeApproval(a, controller));
    expect(json((await call('inspect', '--trust', f('trust-v1.cbor'), f('appr.cbor'))).out)).toMatchObject({
      kind: 'approval',
      valid: true,
    });
    expect((await call('inspect', '--trust', f('trust-v1.cbor'), f('appr-ctl.cbor'))).code).toBe(66);
  });

  it('I/O and key errors: a missing file exits 1, a bad PEM 65', async () => {
    expect((await call('inspect', f('missing.cbor'))).code).toBe(1);
    writeFileSync(f('bad.pem'), 'not a key');
    expect((await call('inspect', '--key', f('bad.pem'), f('hb.cbor'))).code).toBe(65);
  });
});

describe('sign', () => {
  const trust = new TrustStore(trustDoc());
  const open = (hex: string) =>
    openCommand(new Uint8Array(Buffer.from(hex.trim(), 'hex')), { site: 'plant-01', trust, nowSec: NOW });

  it('--help', async () => {
    const r = await call('sign', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/--expires-in/);
  });

  it('fills v, prev = seq - 1, exp = iat + expires-in, a random id; honours --prev and --id', async () => {
    const a = open(
      (await sign(...ctlKey, '--type', 'heartbeat', '--body', '{"last":7}', '--expires-in', '15m')).out,
    );
    expect(a.cmd).toMatchObject({
      v: 1,
      seq: 7,
      prev: 6,
      iat: IAT,
      exp: IAT + 900,
      type: 'heartbeat',
      body: { last: 7 },
    });
    const b = open((await sign(...ctlKey, '--type', 'heartbeat', '--body', '{"last":7}')).out);
    expect(b.cmd.id).not.toEqual(a.cmd.id);
    const c = await sign(...ctlKey, '--type', 'state.request', '--prev', '3', '--id', 'ff'.repeat(16));
    expect(open(c.out).cmd).toMatchObject({ prev: 3, id: new Uint8Array(16).fill(0xff), body: {} });
  });

  it('stack.apply: a JSON spec is encoded with encodeSpec (deflated when smaller) and carries its digest', async () => {
    const spec = {
      svc: {
        web: { img: 'registry.local/web', dig: { $hex: '01'.repeat(32) }, env: { A: 'x'.repeat(300) } },
      },
    };
    writeFileSync(f('body.json'), JSON.stringify({ stack: 'web', rev: 4, spec }));
    const r = await sign(...ctlKey, '--type', 'stack.apply', '--body', `@${f('body.json')}`);
    expect(r.code).toBe(0);
    const body = open(r.out).cmd.body as { spec: Uint8Array; z?: boolean };
    const want = encodeSpec(fromJson(spec) as never);
    expect(body.z).toBe(true);
    expect(body.spec).toEqual(want.bytes);
    // Already-encoded spec bytes pass through untouched ($b64 this time).
    const b64 = Buffer.from(want.bytes).toString('base64');
    const r2 = await sign(
      ...ctlKey,
      '--type',
      'stack.apply',
      '--body',
      JSON.stringify({ stack: 'web', rev: 4, spec: { $b64: b64 }, z: true }),
    );
    expect((open(r2.out).cmd.body as { spec: Uint8Array }).spec).toEqual(want.bytes);
  });

  it.each([
    ['body is not JSON', ['--type', 'heartbeat', '--body', '{last:1}'], 65, /malformed: --body is not JSON/],
    ['unknown type', ['--type', 'stack.nuke'], 65, /unknown-type/],
    ['bad $hex', ['--type', 'trust.update', '--body', '{"doc":{"$hex":"xyz"}}'], 65, /invalid \$hex/],
    ['__proto__ key', ['--type', 'state.request', '--body', '{"__proto__":{}}'], 65, /__proto__/],
    [
      'invalid spec',
      ['--type', 'stack.apply', '--body', '{"stack":"w","rev":1,"spec":{"svc":{}}}'],
      65,
      /stack spec/,
    ],
    [
      'site id',
      ['--type', 'heartbeat', '--body', '{"last":1}', '--site', 'Plant 1'],
      65,
      /malformed: command \/site/,
    ],
    ['bad --id', ['--type', 'heartbeat', '--id', 'abc'], 64, /--id must be 32 hex digits/],
    ['bad --seq', ['--type', 'heartbeat', '--seq', '-1'], 64, /--seq/],
    ['bad --expires-in', ['--type', 'heartbeat', '--expires-in', 'soon'], 64, /invalid duration/],
    ['unknown option', ['--type', 'heartbeat', '--frobnicate'], 64, /frobnicate/],
  ] as const)('%s -> exit %i', async (_n, args, code, msg) => {
    const r = await sign(...ctlKey, ...args);
    expect(r.code).toBe(code);
    expect(r.err).toMatch(msg);
    expect(r.out).toBe('');
  });

  it('a public key as --key is malformed (65); a missing key file exits 1', async () => {
    expect((await sign('--key', f('ctl.pub'), '--type', 'heartbeat', '--body', '{"last":1}')).err).toMatch(
      /not a private key/,
    );
    expect((await sign('--key', f('nope.key'), '--type', 'heartbeat', '--body', '{"last":1}')).code).toBe(1);
  });
});

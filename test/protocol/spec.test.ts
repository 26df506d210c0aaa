import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  type Approval,
  canonicalSpec,
  countApprovals,
  criticalReasons,
  decodeSpec,
  encode,
  encodeApproval,
  encodeSpec,
  imageRef,
  isHostMount,
  removeDigest,
  SPEC_LIMITS,
  type StackSpec,
  sha256,
  sign1,
  TrustStore,
} from '../../protocol/src/index.js';
import {
  approver1,
  approver2,
  codeOf,
  controller,
  IAT,
  SITE,
  seedOf,
  toHexStr,
  trustDoc,
} from './helpers.js';

const dig = (label: string) => sha256(new TextEncoder().encode(label));

const spec: StackSpec = {
  svc: {
    api: {
      img: 'registry.local/acme/api',
      dig: dig('api'),
      env: { MODE: 'prod', LEVEL: 'info' },
      ports: ['8080:80/tcp'],
      vols: ['data:/var/lib/api'],
      hc: { test: ['CMD', 'wget', '-q', 'http://localhost/health'], int: 10, ret: 3 },
      rst: 'unless-stopped',
      mem: 128 * 1024 * 1024,
      cpu: 500,
    },
    historian: { img: 'registry.local/acme/historian', dig: dig('historian'), cmd: ['--retain', '30d'] },
  },
  vol: ['data'],
};

describe('stack spec encoding [PAY-SPEC-1] [PAY-SPEC-2]', () => {
  it('round-trips without deflate', () => {
    const e = encodeSpec(spec, 'never');
    expect(e.z).toBe(false);
    expect(e.bytes).toEqual(encode(spec));
    expect(e.digest).toEqual(sha256(e.bytes));
    expect(decodeSpec(e.bytes, false)).toEqual(spec);
  });

  it('deflates when that is smaller, and the digest covers the bytes as carried', () => {
    const big: StackSpec = { svc: { ...spec.svc, api: { ...spec.svc.api!, env: { A: 'x'.repeat(400) } } } };
    const e = encodeSpec(big);
    expect(e.z).toBe(true);
    expect(e.bytes.length).toBeLessThan(encode(big).length);
    expect(e.digest).toEqual(sha256(e.bytes));
    expect(decodeSpec(e.bytes, true)).toEqual(big);
  });

  it('does not deflate when that would not help', () => {
    const tiny: StackSpec = { svc: { a: { img: 'a', dig: dig('a') } } };
    const e = encodeSpec(tiny);
    expect(e.z).toBe(false);
    expect(decodeSpec(e.bytes, false)).toEqual(tiny);
  });

  it('a deflate bomb is too-large, capped before it is inflated [PAY-SPEC-3]', () => {
    const bomb = new Uint8Array(deflateRawSync(Buffer.alloc(64 * 1024 * 1024)));
    expect(bomb.length).toBeLessThan(128 * 1024);
    const before = process.memoryUsage().arrayBuffers;
    expect(codeOf(() => decodeSpec(bomb, true))).toBe('too-large');
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 * 1024 * 1024);
    // Just over the cap is refused too; just under is inflated and then judged by the schema.
    const over = new Uint8Array(deflateRawSync(Buffer.alloc(SPEC_LIMITS.maxBytes + 1)));
    expect(codeOf(() => decodeSpec(over, true))).toBe('too-large');
  });

  it('corrupt deflate data and non-spec CBOR are malformed', () => {
    expect(codeOf(() => decodeSpec(Uint8Array.of(0xff, 0xff, 0xff), true))).toBe('malformed');
    expect(codeOf(() => decodeSpec(encode(spec), true))).toBe('malformed'); // plain CBOR flagged z
    expect(codeOf(() => decodeSpec(encodeSpec({ ...spec }, 'never').bytes.subarray(1), false))).toBe(
      'malformed',
    );
    expect(codeOf(() => decodeSpec(encode({ svc: {} }), false))).toBe('malformed');
    expect(codeOf(() => decodeSpec(encode({ svc: { a: { img: 'A B' } } }), false))).toBe('malformed');
  });

  it('encodeSpec validates', () => {
    expect(codeOf(() => encodeSpec({ svc: { a: { img: 'a', dig: new Uint8Array(31) } } }))).toBe('malformed');
    expect(codeOf(() => encodeSpec({ svc: { a: { img: 'a', priv: 'yes' as unknown as boolean } } }))).toBe(
      'malformed',
    );
  });

  it('canonicalSpec sorts keys so equal content gives equal bytes', () => {
    const shuffled: StackSpec = {
      vol: ['data'],
      svc: {
        historian: { cmd: ['--retain', '30d'], dig: dig('historian'), img: 'registry.local/acme/historian' },
        api: { ...spec.svc.api!, env: { LEVEL: 'info', MODE: 'prod' } },
      },
    };
    const a = encodeSpec(canonicalSpec(spec), 'never');
    const b = encodeSpec(canonicalSpec(shuffled), 'never');
    expect(toHexStr(a.bytes)).toBe(toHexStr(b.bytes));
    expect(Object.keys(canonicalSpec(spec).svc)).toEqual(['api', 'historian']);
    expect(Object.keys(canonicalSpec(spec).svc.api!.env!)).toEqual(['LEVEL', 'MODE']);
  });
});

describe('critical specs [SEC-CRIT]', () => {
  it('lists privileged, host network and host mounts; nothing for a plain spec', () => {
    expect(criticalReasons(spec)).toEqual([]);
    const crit: StackSpec = {
      svc: {
        a: { img: 'a', priv: true },
        b: { img: 'b', net: 'host', vols: ['/etc:/host/etc:ro', 'named:/data', './rel:/x', '~/home:/y'] },
        c: { img: 'c', net: 'bridge', priv: false },
      },
    };
    expect(criticalReasons(crit)).toEqual([
      'a: privileged',
      'b: host network',
      'b: host mount /etc',
      'b: host mount ./rel',
      'b: host mount ~/home',
    ]);
    expect(isHostMount('/x:/y')).toBe(true);
    expect(isHostMount('vol:/y')).toBe(false);
  });

  it('imageRef pins by digest [PAY-SPEC-4]', () => {
    expect(imageRef({ img: 'r/a', dig: new Uint8Array(32).fill(0xab) })).toBe(
      `r/a@sha256:${'ab'.repeat(32)}`,
    );
    expect(imageRef({ img: 'r/a', tag: '1.2' })).toBe('r/a:1.2');
    expect(imageRef({ img: 'r/a' })).toBe('r/a:latest');
  });
});

describe('countApprovals [SEC-CRIT]', () => {
  const trust = new TrustStore(trustDoc());
  const specDigest = encodeSpec(spec).digest;
  const want = { stack: 'web', rev: 4, digest: specDigest, site: SITE };
  const approval = (over: Partial<Approval> = {}): Approval => ({
    v: 1,
    stack: 'web',
    rev: 4,
    dig: specDigest,
    iat: IAT,
    ...over,
  });

  it('counts distinct authorised approvers', () => {
    const a1 = encodeApproval(approval(), approver1);
    const a2 = encodeApproval(approval(), approver2);
    expect(countApprovals([a1, a2], want, trust)).toBe(2);
    expect(countApprovals([a1], want, trust)).toBe(1);
    expect(countApprovals([], want, trust)).toBe(0);
    expect(countApprovals(undefined, want, trust)).toBe(0);
  });

  it('the same approver twice counts once', () => {
    const a1 = encodeApproval(approval(), approver1);
    const a1again = encodeApproval(approval({ iat: IAT + 1 }), approver1);
    expect(countApprovals([a1, a1again, a1], want, trust)).toBe(1);
  });

  it('ignores approvals of another digest, revision or stack', () => {
    const a1 = encodeApproval(approval({ dig: sha256(Uint8Array.of(1)) }), approver1);
    const a2 = encodeApproval(approval({ rev: 5 }), approver2);
    const a3 = encodeApproval(approval({ stack: 'other' }), approver2);
    expect(countApprovals([a1, a2, a3], want, trust)).toBe(0);
  });

  it('honours a site restriction', () => {
    const only = encodeApproval(approval({ sites: ['plant-07'] }), approver1);
    const incl = encodeApproval(approval({ sites: ['plant-07', SITE] }), approver2);
    expect(countApprovals([only, incl], want, trust)).toBe(1);
    expect(countApprovals([only, incl], { ...want, site: 'plant-07' }, trust)).toBe(2);
  });

  it('ignores keys without the approve scope, forged and unreadable approvals', () => {
    const byController = encodeApproval(approval(), controller);
    const forged = sign1(encode(approval()), { ...approver2, sign: (m) => approver1.sign(m) });
    const garbage = Uint8Array.of(0xd2, 0x84, 0x40);
    const badSchema = sign1(encode({ ...approval(), extra: 1 }), approver2);
    const unknownKid = encodeApproval(approval(), {
      kid: 'appr-9',
      publicKey: seedOf('x'),
      sign: approver1.sign,
    });
    expect(countApprovals([byController, forged, garbage, badSchema, unknownKid], want, trust)).toBe(0);
    expect(countApprovals([forged, encodeApproval(approval(), approver1)], want, trust)).toBe(1);
  });

  it('stack.remove approvals cover sha256("remove:" + stack)', () => {
    const d = removeDigest('web');
    expect(d).toEqual(sha256(new TextEncoder().encode('remove:web')));
    const a = encodeApproval(approval({ rev: 0, dig: d }), approver1);
    expect(countApprovals([a], { stack: 'web', rev: 0, digest: d, site: SITE }, trust)).toBe(1);
    expect(countApprovals([a], { stack: 'web', rev: 0, digest: removeDigest('db'), site: SITE }, trust)).toBe(
      0,
    );
  });
});

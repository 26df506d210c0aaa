import { describe, expect, it } from 'vitest';
import {
  DEFAULT_LIMITS,
  decode,
  decodeMaps,
  encode,
  type ScanLimits,
  scan,
  scanTaggedArray,
} from '../../protocol/src/index.js';
import { codeOf, hex } from './helpers.js';

const malformed = (h: string, limits?: ScanLimits) => {
  expect(codeOf(() => decode(hex(h), limits))).toBe('malformed');
  expect(codeOf(() => decodeMaps(hex(h), limits))).toBe('malformed');
};

describe('strict CBOR decoding accepts plain RFC 8949 data [CBOR-1]', () => {
  it.each([
    ['00', 0],
    ['17', 23],
    ['1818', 24],
    ['19ffff', 65535],
    ['1a00010000', 65536],
    ['1b001fffffffffffff', Number.MAX_SAFE_INTEGER],
    ['20', -1],
    ['3903e7', -1000],
    ['f4', false],
    ['f5', true],
    ['f6', null],
    ['f93c00', 1],
    ['fa47c35000', 100000],
    ['fb3ff199999999999a', 1.1],
    ['60', ''],
    ['6449455446', 'IETF'],
    ['62c3bc', 'ü'],
    ['80', []],
    ['8301820203820405', [1, [2, 3], [4, 5]]],
    ['a0', {}],
    ['a26161016162820203', { a: 1, b: [2, 3] }],
  ])('%s', (h, want) => {
    expect(decode(hex(h))).toEqual(want);
  });

  it('decodes integers above 2^53 as bigint, never as a rounded number', () => {
    expect(decode(hex('1b0020000000000001'))).toBe(2n ** 53n + 1n);
    expect(decode(hex('3bffffffffffffffff'))).toBe(-(2n ** 64n));
  });

  it('decodes 8-byte-head integers in the safe range as numbers (cborg and Go write 2^32..2^53 so)', () => {
    expect(decode(hex('1b0000000100000001'))).toBe(2 ** 32 + 1);
    expect(decode(hex('a1636d656d1b0000000200000000'))).toEqual({ mem: 2 ** 33 });
    expect(decode(hex('3b001ffffffffffffe'))).toBe(-Number.MAX_SAFE_INTEGER);
    expect(decode(hex('81 1b0000000000000001'))).toEqual([1]);
  });

  it('returns byte strings as plain Uint8Array views (not Buffer)', () => {
    const v = decode(hex('a1616244010203ff')) as { b: Uint8Array };
    expect(v.b).toBeInstanceOf(Uint8Array);
    expect(Buffer.isBuffer(v.b)).toBe(false);
    expect([...v.b]).toEqual([1, 2, 3, 255]);
  });

  it('decodeMaps keeps integer keys as Map keys', () => {
    const m = decodeMaps(hex('a2012704426b31')) as Map<number, unknown>;
    expect(m).toBeInstanceOf(Map);
    expect(m.get(1)).toBe(-8);
    expect([...(m.get(4) as Uint8Array)]).toEqual([0x6b, 0x31]);
  });

  it('encode writes plain CBOR: no tag 259 for Maps, no typed-array tags, no records', () => {
    expect(Buffer.from(encode(new Map([[1, 2]]))).toString('hex')).toBe('a10102');
    expect(Buffer.from(encode(Uint8Array.of(1, 2))).toString('hex')).toBe('420102');
    expect(Buffer.from(encode({ a: [1, 'x', null, true] })).toString('hex')).toBe(
      'a16161840161 78f6f5'.replace(/\s/g, ''),
    );
    const objs = encode([{ k: 1 }, { k: 2 }]);
    expect(Buffer.from(objs).toString('hex')).toBe('82a1616b01a1616b02');
  });
});

describe('rejections [CBOR-2]..[CBOR-9]', () => {
  it.each(['5f41004100ff', '7f6161ff', '9f00ff', 'bf616100ff', '1f', '3f'])(
    'indefinite length %s [CBOR-4]',
    (h) => malformed(h),
  );

  it.each(['1c', '1d', '1e', '3c', '5d', '7e00', '9c', 'bd', 'dc00', 'fc', 'fd', 'fe'])(
    'reserved additional info 28-30: %s [CBOR-4]',
    (h) => malformed(h),
  );

  it.each(['f7', 'f800', 'f818', 'f8ff', 'e0', 'f3', 'ff', '81ff'])(
    'undefined, simple(n) and stray break: %s [CBOR-8]',
    (h) => malformed(h),
  );

  it.each([
    'c074323031332d30332d32315432303a30343a30305a', // tag 0 date
    'c11a514b67b0', // tag 1 epoch
    'c249010000000000000000', // bignum
    'd818450102030405', // tag 24 embedded CBOR
    'd9d9f700', // self-describe
    'd2840000000000', // COSE_Sign1 tag where no root tag is allowed
    'd9010380', // tag 259
    'a16161c100', // tag inside a map value
  ])('unknown tag %s [CBOR-7]', (h) => malformed(h));

  it('a tag is allowed only at the root, only the expected one [CBOR-7]', () => {
    const limits = { ...DEFAULT_LIMITS, rootTag: 18 };
    expect(() => scan(hex('d28100'), limits)).not.toThrow();
    expect(codeOf(() => scan(hex('81d200'), limits))).toBe('malformed');
    expect(codeOf(() => scan(hex('d2d200'), limits))).toBe('malformed');
    expect(codeOf(() => scan(hex('d38100'), limits))).toBe('malformed');
  });

  it.each([
    ['a201000100', 'same int key'],
    ['a20100180100', 'same int key, second non-minimal (0x18 0x01)'],
    ['a201001900010001', 'same int key, 2-byte head'],
    ['a2200038000000', 'same negative int key, non-minimal'],
    ['a2616100616100', 'same text key'],
    ['a2780161006161 00'.replace(/\s/g, ''), 'same text key, non-minimal length'],
    ['a16178a2616100616100', 'duplicate inside a nested map'],
  ])('duplicate map key %s (%s) [CBOR-6]', (h) => malformed(h));

  it('an integer key and its decimal text are one property in decode() [CBOR-6]', () => {
    // {1: "a", "1": "b"} would otherwise decode to {"1": "b"}, silently dropping a signed value.
    expect(codeOf(() => decode(hex('a2016161613161 62'.replace(/\s/g, ''))))).toBe('malformed');
    // Distinct labels for COSE headers, where int and text keys are different things.
    expect((decodeMaps(hex('a201616161316162')) as Map<unknown, unknown>).size).toBe(2);
  });

  it.each([
    ['a1410000', 'byte string'],
    ['a18000', 'array'],
    ['a1a000', 'map'],
    ['a1f93c0000', 'half float'],
    ['a1fb3ff000000000000000', 'double'],
    ['a1f500', 'true'],
    ['a1f600', 'null'],
  ])('non-text/int map key %s (%s) [CBOR-6]', (h) => malformed(h));

  it('__proto__ keys, at any depth [CBOR-6]', () => {
    const proto = '695f5f70726f746f5f5f';
    malformed(`a1${proto}00`);
    malformed(`a161618181a1${proto}a0`);
    const polluted = {} as Record<string, unknown>;
    expect(polluted.polluted).toBeUndefined();
  });

  it.each(['62c328', '61ff', '62c080', '63eda080', '64f4908080', 'a162c32800'])(
    'invalid UTF-8 %s [CBOR-8]',
    (h) => malformed(h),
  );

  it('depth cap [CBOR-5]', () => {
    const nest = (n: number) => `${'81'.repeat(n)}00`;
    expect(decode(hex(nest(16)))).toBeDefined();
    malformed(nest(17));
    malformed(`${'a16161'.repeat(17)}00`);
    expect(codeOf(() => decode(hex(nest(5)), { ...DEFAULT_LIMITS, maxDepth: 4 }))).toBe('malformed');
  });

  it('a depth far beyond the cap fails fast without exhausting the stack [CBOR-5]', () => {
    malformed(`${'81'.repeat(100_000)}00`);
  });

  it('item cap [CBOR-5]', () => {
    const arr = (n: number) => new Uint8Array([0x99, n >> 8, n & 0xff, ...new Array<number>(n).fill(0)]);
    const limits = { ...DEFAULT_LIMITS, maxItems: 1000 };
    expect((decode(arr(999), limits) as unknown[]).length).toBe(999); // 999 + the array itself
    expect(codeOf(() => decode(arr(1000), limits))).toBe('malformed');
    // A map entry counts as two items.
    const map = (n: number) => {
      const b = [0xb9, n >> 8, n & 0xff];
      for (let i = 0; i < n; i++) b.push(0x19, i >> 8, i & 0xff, 0);
      return new Uint8Array(b);
    };
    expect(() => decodeMaps(map(499), limits)).not.toThrow();
    expect(codeOf(() => decodeMaps(map(500), limits))).toBe('malformed');
  });

  it('size cap -> too-large, checked before any byte is read [CBOR-3]', () => {
    const limits = { ...DEFAULT_LIMITS, maxBytes: 16 };
    expect(decode(new Uint8Array(16).fill(0).subarray(0, 1), limits)).toBe(0);
    const big = new Uint8Array(17).fill(0xff); // garbage: size wins over malformed
    expect(codeOf(() => decode(big, limits))).toBe('too-large');
    expect(codeOf(() => scan(big, limits))).toBe('too-large');
    expect(codeOf(() => decode(new Uint8Array(DEFAULT_LIMITS.maxBytes + 1)))).toBe('too-large');
  });

  it('trailing bytes [CBOR-9]', () => {
    malformed('0000');
    malformed('a0a0');
    malformed('8100ff');
    malformed('6161616100');
  });

  it('empty input and non-bytes', () => {
    malformed('');
    expect(codeOf(() => decode('a0' as unknown as Uint8Array))).toBe('malformed');
    expect(codeOf(() => decode([0] as unknown as Uint8Array))).toBe('malformed');
  });

  it('every truncation of a valid item [CBOR-2]', () => {
    const full = encode({
      site: 'plant-01',
      id: new Uint8Array(16),
      n: [1, 70000, 2 ** 40, -5, 1.5],
      t: true,
    });
    expect(() => decode(full)).not.toThrow();
    for (let i = 1; i < full.length; i++) {
      expect(codeOf(() => decode(full.subarray(0, i)))).toBe('malformed');
    }
  });

  it.each([
    '5bffffffffffffffff',
    '7bffffffffffffffff',
    '9bffffffffffffffff',
    'bbffffffffffffffff',
    '5b7fffffffffffffff00',
    '5affffffff0000',
    '7affffffff61',
    '9affffffff00000000',
    'baffffffff00',
    'ba7fffffff0000',
    '99ffff00',
    'dbffffffffffffffff00',
  ])('huge declared length %s is rejected without allocating it [CBOR-2]', (h) => {
    const before = process.memoryUsage().arrayBuffers;
    malformed(h);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 1024 * 1024);
  });
});

describe('scanTaggedArray', () => {
  const limits = DEFAULT_LIMITS;
  it('returns the exact spans of the elements', () => {
    const b = hex('d2 84 43a10127 a0 42abcd 40');
    const spans = scanTaggedArray(b, 18, 4, limits);
    expect(spans).toEqual([
      { start: 2, end: 6 },
      { start: 6, end: 7 },
      { start: 7, end: 10 },
      { start: 10, end: 11 },
    ]);
  });
  it.each([
    ['d3 84 40 a0 40 40', 'wrong tag'],
    ['d2 83 40 a0 40', 'wrong array length'],
    ['d2 a4 40 a0 40 40', 'not an array'],
    ['84 40 a0 40 40', 'untagged'],
    ['d2 84 40 a0 40 40 00', 'trailing bytes'],
    ['d2 84 40 a0 40', 'truncated'],
    ['d2 84 40 a0 40 d2 40', 'nested tag'],
    ['d2 9f 40 a0 40 40 ff', 'indefinite array'],
  ])('rejects %s (%s)', (h) => {
    expect(codeOf(() => scanTaggedArray(hex(h), 18, 4, limits))).toBe('malformed');
  });
  it('applies the size cap first', () => {
    expect(codeOf(() => scanTaggedArray(new Uint8Array(100), 18, 4, { ...limits, maxBytes: 99 }))).toBe(
      'too-large',
    );
  });
});

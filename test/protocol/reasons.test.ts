import { describe, expect, it } from 'vitest';
import {
  isProtocolError,
  isReasonCode,
  ProtocolError,
  REASON_CODES,
  REASONS,
} from '../../protocol/src/index.js';

describe('reason code registry [RC-1]', () => {
  it('lists every code once, each with a description', () => {
    expect(new Set(REASON_CODES).size).toBe(REASON_CODES.length);
    expect(REASON_CODES).toEqual(Object.keys(REASONS));
    for (const c of REASON_CODES) {
      expect(c).toMatch(/^[a-z]+(-[a-z]+)*$/);
      expect(REASONS[c].length).toBeGreaterThan(10);
    }
    expect(Object.isFrozen(REASON_CODES)).toBe(true);
  });

  it('contains the rejection codes DESIGN §3 names for acks', () => {
    for (const c of [
      'bad-signature',
      'unknown-key',
      'replay',
      'expired',
      'wrong-site',
      'malformed',
      'too-large',
      'policy',
    ]) {
      expect(isReasonCode(c)).toBe(true);
    }
  });

  it('isReasonCode rejects non-codes, including inherited object keys', () => {
    for (const v of [
      '',
      'Malformed',
      'toString',
      'constructor',
      '__proto__',
      'hasOwnProperty',
      1,
      null,
      undefined,
    ]) {
      expect(isReasonCode(v)).toBe(false);
    }
  });
});

describe('ProtocolError', () => {
  it('carries its code, a prefixed message and a stable name', () => {
    const e = new ProtocolError('wrong-site', 'for plant-02');
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe('wrong-site');
    expect(e.message).toBe('wrong-site: for plant-02');
    expect(e.name).toBe('ProtocolError');
    expect(isProtocolError(e)).toBe(true);
    expect(isProtocolError(new Error('x'))).toBe(false);
    expect(isProtocolError({ code: 'malformed' })).toBe(false);
  });
});

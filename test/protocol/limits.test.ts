/** Regression tests for limits found in review: long site kids, expired trust roots, text clipping. */
import { describe, expect, it } from 'vitest';
import {
  clipText,
  decode,
  encode,
  encodeAck,
  encodeCommand,
  openAck,
  openCommand,
  ProtocolError,
  siteKid,
  TrustStore,
} from '../../protocol/src/index.js';
import { ack, command, controller, NOW, signerOf, trustDoc } from './helpers.js';

describe('protocol limits', () => {
  it('[ENV-2] a 63-character site id can sign its uplink (kid site:<id> fits)', () => {
    const site = `s${'x'.repeat(62)}`;
    expect(site).toMatch(/^[a-z0-9][a-z0-9_-]{0,62}$/);
    const signer = signerOf(siteKid(site));
    const bytes = encodeAck(ack({ site }), signer);
    const opened = openAck(bytes, (s) => (s === site ? signer.publicKey : undefined), site);
    expect(opened.site).toBe(site);
  });

  it('[TRUST-6] an expired trust root authorises only trust.update', () => {
    const expired = new TrustStore(trustDoc({ exp: NOW - 1 }));
    const hb = encodeCommand(command('heartbeat'), controller);
    const err = (() => {
      try {
        openCommand(hb, { site: 'plant-01', trust: expired, nowSec: NOW });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).code).toBe('expired');
    const renewal = encodeCommand(command('trust.update'), controller);
    expect(openCommand(renewal, { site: 'plant-01', trust: expired, nowSec: NOW }).cmd.type).toBe(
      'trust.update',
    );
  });

  it('[LIM-2] clipText never splits a surrogate pair, so the result always round-trips', () => {
    const s = `${'a'.repeat(9)}\u{1F600}tail`; // the emoji occupies code units 9 and 10
    const clipped = clipText(s, 10);
    expect(clipped).toBe('a'.repeat(9));
    expect(decode(encode({ msg: clipped }))).toEqual({ msg: clipped });
    expect(clipText('x\uDC00y', 10)).toBe('x\uFFFDy');
    expect(clipText('short', 10)).toBe('short');
    // Without clipText a lone surrogate makes the whole message unreadable.
    expect(() => decode(encode({ msg: s.slice(0, 10) }))).toThrow(ProtocolError);
  });
});

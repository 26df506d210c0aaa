/**
 * Revoked serial numbers from a PEM CRL (RFC 5280 §5.1), with a minimal DER reader. The TLS stack
 * (OpenSSL, via the secure context's `crl` option) verifies the CRL's signature and checks new
 * connections; this list serves one purpose only: finding connections that are ALREADY open with a
 * certificate the reloaded CRL revokes, so they can be disconnected. Bad input throws; nothing partial.
 */

interface Tlv {
  tag: number;
  start: number; // first content byte
  end: number; // one past the last content byte
}

function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw new Error('truncated DER');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new Error('multi-byte DER tags are not used in CRLs');
  let len = buf[pos + 1]!;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('unsupported DER length');
    if (p + n > limit) throw new Error('truncated DER length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p + i]!;
    p += n;
  }
  if (p + len > limit) throw new Error('DER length past the end');
  return { tag, start: p, end: p + len };
}

function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let p = parent.start;
  while (p < parent.end) {
    const t = readTlv(buf, p, parent.end);
    out.push(t);
    p = t.end;
    if (out.length > 1_000_000) throw new Error('too many DER items');
  }
  return out;
}

const SEQUENCE = 0x30;
const INTEGER = 0x02;

function hex(buf: Uint8Array, t: Tlv): string {
  const s = Buffer.from(buf.subarray(t.start, t.end)).toString('hex').toUpperCase();
  return s.replace(/^0+(?=.)/, '');
}

/** Decodes the first CRL in `pem` and returns its revoked serials (upper-case hex, no leading zeros). */
export function revokedSerials(pem: string): Set<string> {
  const m = /-----BEGIN X509 CRL-----([\s\S]*?)-----END X509 CRL-----/.exec(pem);
  if (!m) throw new Error('no PEM X509 CRL block');
  const der = new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  const top = readTlv(der, 0, der.length);
  if (top.tag !== SEQUENCE) throw new Error('CRL is not a SEQUENCE');
  const [tbs] = children(der, top);
  if (!tbs || tbs.tag !== SEQUENCE) throw new Error('tbsCertList is not a SEQUENCE');
  const fields = children(der, tbs);
  // version INTEGER OPTIONAL, signature AlgorithmIdentifier, issuer Name, thisUpdate Time,
  // nextUpdate Time OPTIONAL, revokedCertificates SEQUENCE OF SEQUENCE OPTIONAL, [0] extensions
  let i = fields[0]?.tag === INTEGER ? 1 : 0;
  i += 3; // signature, issuer, thisUpdate
  const isTime = (t: Tlv | undefined) => t !== undefined && (t.tag === 0x17 || t.tag === 0x18);
  if (isTime(fields[i])) i++;
  const out = new Set<string>();
  const list = fields[i];
  if (!list || list.tag !== SEQUENCE) return out; // no revoked certificates
  for (const entry of children(der, list)) {
    if (entry.tag !== SEQUENCE) throw new Error('revoked entry is not a SEQUENCE');
    const [serial] = children(der, entry);
    if (!serial || serial.tag !== INTEGER) throw new Error('revoked entry without a serial');
    out.add(hex(der, serial));
  }
  return out;
}

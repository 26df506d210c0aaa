/**
 * The one registry of reason codes (SPEC [RC-1]). Every component reports rejections and failures
 * with these codes, on the wire (ack `rc`), in logs, in metrics and in API problem documents.
 * Codes are never reused or renamed; new codes are appended.
 */
export const REASONS = {
  // Rejections of an inbound envelope (ack status `rejected`).
  'bad-signature': 'the signature does not verify, or is not canonical (S >= L)',
  'unknown-key': 'the kid is not in the current trust root, or may not sign this message type',
  replay: 'the seq is at or below the last one applied, or the command id was seen before',
  expired: 'expires-at is at or before trusted time',
  'wrong-site': 'the site id inside the signed payload is not this site',
  malformed: 'not well-formed strict CBOR/COSE, or the payload does not match its schema',
  'too-large': 'the input exceeds the configured size cap',
  policy: 'the command asks for something the site policy forbids (privileged, host mounts, tags, ...)',
  'unsupported-version': 'the protocol version is not one this peer speaks',
  'unknown-type': 'the command type is not known to this peer',
  'trust-version': 'a trust.update does not advance the trust root version by exactly one',
  'trust-threshold': 'a trust document lacks the required number of distinct root signatures',
  'not-yet-valid': 'issued-at is too far in the future of trusted time',
  // Failures while executing (ack status `failed` / `rolled-back` / `deferred`).
  'gap-timeout': 'a missing seq was not filled within the gap-hold time (SPEC [ORD-3])',
  'runtime-error': 'the container runtime returned an error',
  'image-unavailable': 'the image is neither present nor pullable from the configured mirror',
  'health-timeout': 'services did not become healthy within the deadline after apply',
  'unknown-stack': 'the stack named by the command is not deployed at this site',
  'disk-full': 'the agent is out of disk space and is not accepting commands',
  'maintenance-window': 'the site is outside its maintenance window',
  'update-lock': 'an application holds an update lock',
  internal: 'an unexpected internal error (a bug: please report)',
} as const;

export type ReasonCode = keyof typeof REASONS;

export const REASON_CODES = Object.freeze(Object.keys(REASONS) as ReasonCode[]);

export function isReasonCode(v: unknown): v is ReasonCode {
  return typeof v === 'string' && Object.hasOwn(REASONS, v);
}

/** A typed rejection. Every decoding and verification failure in `protocol/` throws this and only this. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ReasonCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export function isProtocolError(err: unknown): err is ProtocolError {
  return err instanceof ProtocolError;
}

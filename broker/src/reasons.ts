/**
 * Why the broker refused a connection, a subscription, a publish or a delivery. These are the values of
 * the `reason` label of `outpost_broker_rejects_total` and of the `reason` field of the warning logged
 * for each refusal. They are broker-local (the protocol registry in protocol/src/reasons.ts covers
 * envelope and ack rejections, which the broker never sees inside). Append, never rename.
 */
export const REJECT_REASONS = {
  'rate-limited': 'connection refused by the per-source-IP or global connection-rate limit',
  'too-many-connections': 'the broker already holds its maximum number of connections',
  'no-credentials': 'neither a client certificate nor a username and password',
  'cert-untrusted': 'the client certificate does not chain to the configured CA',
  'cert-revoked': 'the client certificate is on the CRL (at connect, or after a CRL reload)',
  'cert-expired': 'the client certificate is past its notAfter date',
  'cert-not-yet-valid': 'the client certificate is before its notBefore date',
  'cert-identity': 'the certificate lacks a single CN or a single known OU (role)',
  'client-id': 'the MQTT client id does not belong to the authenticated identity',
  'bad-credentials': 'unknown user or wrong password',
  'password-not-allowed': 'password login is not allowed for this role on this listener',
  keepalive: 'keepalive is 0 or above the configured maximum',
  'will-topic': 'the last-will topic is not one this identity may publish',
  'acl-publish': 'publish to a topic this identity may not publish',
  'acl-subscribe': 'subscription to a filter this identity may not read (SUBACK 0x80)',
  'acl-forward': 'delivery of a message this identity may not read (defence in depth)',
  'topic-too-long': 'topic or filter longer than limits.maxTopicLength',
  'topic-too-deep': 'topic or filter with more levels than limits.maxTopicLevels',
  'packet-too-large': 'an MQTT packet larger than limits.maxPacketBytes',
  'malformed-packet': 'bytes that are not a well-formed MQTT 3.1.1 packet stream',
  'protocol-error': 'a packet out of order or otherwise refused by the MQTT state machine',
  'slow-consumer':
    'the client did not drain its socket within limits.drainTimeoutMs, or more live messages piled up behind its stored queue than the broker holds',
  'keepalive-timeout': 'no packet from the client within 1.5 x its keepalive',
  'connect-timeout': 'no CONNECT within limits.connectTimeoutMs',
  'queue-full': 'a message for a persistent session dropped by the per-client queue cap',
  'tls-handshake': 'the TLS handshake failed (protocol version, cipher, or not TLS at all)',
} as const;

export type RejectReason = keyof typeof REJECT_REASONS;
export const REJECT_REASON_LIST = Object.freeze(Object.keys(REJECT_REASONS) as RejectReason[]);

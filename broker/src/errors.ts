/**
 * Typed failures of the broker's own API (config, user file, TLS material, listeners). Callers branch
 * on `code`. Refusals of clients are not errors of this kind: they are counted and logged with a
 * {@link RejectReason} (see reasons.ts).
 */
export const BROKER_ERRORS = {
  config: 'the broker configuration is invalid',
  'users-file': 'the password user file is unreadable or malformed',
  'invalid-user': 'a user name, role or password does not meet the rules',
  'user-exists': 'the user already exists (use force to replace it)',
  tls: 'TLS material (certificate, key, CA, CRL) is missing or unreadable',
  listen: 'a listener could not be started',
  state: 'the broker is not in a state that allows this call',
} as const;

export type BrokerErrorCode = keyof typeof BROKER_ERRORS;

export class BrokerError extends Error {
  override readonly name = 'BrokerError';
  constructor(
    readonly code: BrokerErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export function isBrokerError(err: unknown): err is BrokerError {
  return err instanceof BrokerError;
}

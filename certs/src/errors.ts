/**
 * Typed failures of `outpost certs` and its library functions. Callers branch on `code`, never on the
 * message text. Nothing on disk is changed when one of these is thrown before a write starts; a failure
 * of `openssl` half-way is reported with the command that failed.
 */
export const CERTS_ERRORS = {
  exists: 'the file or identity already exists (use --force to replace it)',
  'not-found': 'a file the operation needs does not exist (run `outpost certs init` first?)',
  'invalid-name':
    'a site id, user or certificate name does not match ^[a-z0-9][a-z0-9_-]{0,62}$ or is reserved',
  'invalid-argument': 'an option value is out of range or malformed',
  'name-taken': 'the name is already used by an identity of another role (client ids would collide)',
  openssl: 'the openssl command failed',
  trust: 'a trust-root document does not verify or cannot be signed with the available root keys',
} as const;

export type CertsErrorCode = keyof typeof CERTS_ERRORS;

export class CertsError extends Error {
  override readonly name = 'CertsError';
  constructor(
    readonly code: CertsErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export function isCertsError(err: unknown): err is CertsError {
  return err instanceof CertsError;
}

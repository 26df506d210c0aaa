/**
 * The controller's catalogue of API problem codes (fastify's FST_ERR_* is the model): every error the
 * API returns is an `application/problem+json` document (RFC 9457) whose `code` is one of these.
 * Protocol failures keep their reason code from `protocol/src/reasons.ts`. Codes are never reused.
 */
import { isProtocolError } from '../../protocol/src/index.js';

export const API_ERRORS = {
  'invalid-request': { status: 400, title: 'The request does not match its schema' },
  'malformed-json': { status: 400, title: 'The request body is not valid JSON' },
  'bad-target': { status: 400, title: 'The deployment target is not valid' },
  'bad-selector': { status: 400, title: 'The label selector is not valid' },
  'bad-key': { status: 400, title: 'The public key is not an Ed25519 key' },
  unauthorized: { status: 401, title: 'A valid bearer token is required' },
  forbidden: { status: 403, title: 'Your role does not allow this' },
  'forbidden-scope': { status: 403, title: 'The request touches sites outside your groups' },
  'not-found': { status: 404, title: 'No such resource' },
  'unknown-site': { status: 404, title: 'No such site' },
  'unknown-group': { status: 404, title: 'No such group' },
  'unknown-stack': { status: 404, title: 'No such stack' },
  'unknown-revision': { status: 404, title: 'No such stack revision' },
  'unknown-command': { status: 404, title: 'No such command' },
  'unknown-deployment': { status: 404, title: 'No such deployment' },
  'unknown-user': { status: 404, title: 'No such user' },
  'unknown-token': { status: 404, title: 'No such token' },
  'site-exists': { status: 409, title: 'A site with this id is already enrolled' },
  'group-exists': { status: 409, title: 'A group with this name already exists' },
  'user-exists': { status: 409, title: 'A user with this name already exists' },
  'not-cancellable': { status: 409, title: 'Only pending commands can be cancelled' },
  'approval-required': { status: 409, title: 'A critical change needs approval' },
  'invalid-compose': { status: 422, title: 'The Compose file is invalid or uses unsupported features' },
  'empty-target': { status: 422, title: 'The target matches no site' },
  'too-large': { status: 413, title: 'The request body is too large' },
  'unsupported-media-type': { status: 415, title: 'Unsupported content type' },
  'schema-too-new': { status: 500, title: 'The database was written by a newer controller' },
  'config-invalid': { status: 500, title: 'The controller configuration is invalid' },
  'signing-key': { status: 500, title: 'The signing key cannot be loaded' },
  internal: { status: 500, title: 'Internal error' },
} as const;

export type ApiErrorCode = keyof typeof API_ERRORS;

export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: number;
  readonly title: string;
  constructor(
    readonly code: ApiErrorCode,
    readonly detail: string,
    readonly errors?: readonly FieldError[],
  ) {
    super(`${code}: ${detail}`);
    this.status = API_ERRORS[code].status;
    this.title = API_ERRORS[code].title;
  }
}

export function isApiError(err: unknown): err is ApiError {
  return err instanceof ApiError;
}

/** RFC 9457 problem document. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  errors?: readonly FieldError[];
}

export function problemType(code: string): string {
  return `urn:outpost:problem:${code}`;
}

/** Maps any thrown value to a problem document (unknown errors become `internal`, detail hidden). */
export function toProblem(err: unknown): Problem {
  if (isApiError(err)) {
    return {
      type: problemType(err.code),
      title: err.title,
      status: err.status,
      detail: err.detail,
      code: err.code,
      ...(err.errors ? { errors: err.errors } : {}),
    };
  }
  if (isProtocolError(err)) {
    const status = err.code === 'too-large' ? 413 : 400;
    return { type: problemType(err.code), title: 'Rejected', status, detail: err.message, code: err.code };
  }
  return {
    type: problemType('internal'),
    title: API_ERRORS.internal.title,
    status: 500,
    detail: 'an unexpected error occurred; see the controller log',
    code: 'internal',
  };
}

/**
 * Rollout problem codes. They extend the API's catalogue (`../errors.ts`) without editing it: a
 * `RolloutError` is an `ApiError`, so the API's error handler renders it as problem+json with this
 * code and status. (They belong in `API_ERRORS`; move them there when that file is next touched.)
 */
import { ApiError, type FieldError } from '../errors.js';

export const ROLLOUT_ERRORS = {
  'bad-rollout': { status: 400, title: 'The rollout definition is not valid' },
  'unknown-rollout': { status: 404, title: 'No such rollout' },
  'rollout-exists': { status: 409, title: 'A rollout with this id already exists' },
  'rollout-state': { status: 409, title: 'The rollout is not in a state that allows this' },
  'rollout-conflict': {
    status: 409,
    title: 'Another active rollout of this stack targets some of these sites',
  },
} as const;

export type RolloutErrorCode = keyof typeof ROLLOUT_ERRORS;

export class RolloutError extends ApiError {
  constructor(code: RolloutErrorCode, detail: string, errors?: readonly FieldError[]) {
    super('invalid-request', detail, errors);
    const e = ROLLOUT_ERRORS[code];
    Object.defineProperties(this, {
      code: { value: code, enumerable: true },
      status: { value: e.status, enumerable: true },
      title: { value: e.title, enumerable: true },
      message: { value: `${code}: ${detail}` },
    });
  }
}

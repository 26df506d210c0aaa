/** Typed runtime failures: a reason code from protocol/src/reasons.ts plus a short detail. */
import type { ReasonCode } from '../../../protocol/src/index.js';

export class RuntimeError extends Error {
  override readonly name = 'RuntimeError';
  constructor(
    readonly code: ReasonCode,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}

export function isRuntimeError(err: unknown): err is RuntimeError {
  return err instanceof RuntimeError;
}

/** The HTTP status of a dockerode error, if any. */
export function statusOf(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

/** A short, single-line description of an engine error (no request bodies, no env values). */
export function describe(err: unknown): string {
  if (err instanceof RuntimeError) return err.detail;
  const e = err as { json?: { message?: unknown }; reason?: unknown; message?: unknown } | null;
  const msg =
    (typeof e?.json?.message === 'string' && e.json.message) ||
    (typeof e?.message === 'string' && e.message) ||
    String(err);
  return msg.replace(/\s+/g, ' ').slice(0, 200);
}

/** Wraps an engine error as `runtime-error` unless it is already typed. */
export function asRuntimeError(err: unknown, what: string): RuntimeError {
  if (err instanceof RuntimeError) return err;
  return new RuntimeError('runtime-error', `${what}: ${describe(err)}`);
}

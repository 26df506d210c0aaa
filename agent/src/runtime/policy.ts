/**
 * Target validation and site runtime policy (DESIGN §5, I9). Pure: shared by every runtime. A target
 * that fails here is refused before anything is touched.
 */
import {
  check,
  criticalReasons,
  isHostMount,
  isProtocolError,
  type ReasonCode,
  StackSpecSchema,
} from '../../../protocol/src/index.js';
import type { DesiredStack, RuntimePolicy } from './types.js';

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export const DEFAULT_POLICY: RuntimePolicy = Object.freeze({ allowTags: false });

export interface Refusal {
  readonly reason: ReasonCode;
  readonly detail: string;
}

/** A service volume entry, parsed: a named volume of the stack, or a host mount (critical). */
export type VolumeMount =
  | { readonly kind: 'named'; readonly volume: string; readonly target: string; readonly readOnly: boolean }
  | { readonly kind: 'host'; readonly source: string; readonly target: string; readonly readOnly: boolean };

/** Parses `volume:/path[:ro|rw]` or `/host/path:/path[:ro|rw]`; undefined when malformed. */
export function parseVolume(entry: string): VolumeMount | undefined {
  const parts = entry.split(':');
  if (parts.length < 2 || parts.length > 3) return undefined;
  const [source = '', target = '', mode] = parts;
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') return undefined;
  if (!target.startsWith('/') || target.includes('\0')) return undefined;
  const readOnly = mode === 'ro';
  if (isHostMount(source)) {
    // Relative host paths (`./x`, `~/x`) mean nothing on a device: only absolute paths.
    if (!source.startsWith('/') || source.includes('\0')) return undefined;
    return { kind: 'host', source, target, readOnly };
  }
  if (!NAME.test(source)) return undefined;
  return { kind: 'named', volume: source, target, readOnly };
}

/** The named volumes a stack uses: those it declares plus those its services mount, sorted. */
export function stackVolumes(target: DesiredStack): string[] {
  const out = new Set<string>(target.spec.vol ?? []);
  for (const s of Object.values(target.spec.svc)) {
    for (const v of s.vols ?? []) {
      const m = parseVolume(v);
      if (m?.kind === 'named') out.add(m.volume);
    }
  }
  return [...out].sort();
}

function parsePort(p: string): boolean {
  const parts = p.replace(/\/(tcp|udp)$/, '').split(':');
  const nums = parts.slice(-2).map(Number);
  return nums.every((n) => Number.isInteger(n) && n >= 1 && n <= 65535);
}

/**
 * Checks a target's shape (`malformed`) and the site policy (`policy`). Returns the first problem, or
 * undefined when the target may be applied.
 */
export function validateTarget(target: DesiredStack, policy: RuntimePolicy): Refusal | undefined {
  if (typeof target?.name !== 'string' || !NAME.test(target.name)) {
    return { reason: 'malformed', detail: 'stack name does not match the name pattern' };
  }
  if (!Number.isInteger(target.rev) || target.rev < 1 || target.rev > 0xffff_ffff) {
    return { reason: 'malformed', detail: `stack ${target.name}: revision is not a positive integer` };
  }
  try {
    check(StackSpecSchema, target.spec, 'stack spec');
  } catch (err) {
    if (isProtocolError(err)) return { reason: err.code, detail: `stack ${target.name}: ${err.message}` };
    throw err;
  }
  for (const [name, s] of Object.entries(target.spec.svc)) {
    for (const v of s.vols ?? []) {
      if (!parseVolume(v)) return { reason: 'malformed', detail: `${name}: bad volume entry` };
    }
    for (const p of s.ports ?? []) {
      if (!parsePort(p)) return { reason: 'malformed', detail: `${name}: bad port ${p}` };
    }
    if (!s.dig && !policy.allowTags) {
      return { reason: 'policy', detail: `${name}: image not pinned by digest and site policy forbids tags` };
    }
  }
  const critical = criticalReasons(target.spec);
  if (critical.length > 0 && target.approvedCritical !== true) {
    return { reason: 'policy', detail: `critical change without approval: ${critical.join(', ')}` };
  }
  return undefined;
}

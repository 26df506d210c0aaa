/**
 * Naming and hashing of what a runtime creates for a stack (SPEC [RT-1]). Pure: shared by the Docker
 * runtime and the in-memory runtime so both agree on identity.
 */
import { createHash } from 'node:crypto';
import { canonicalSpec, type Service, toHex } from '../../../protocol/src/index.js';

/** Prefix of every container and volume Outpost creates. */
export const NAME_PREFIX = 'outpost';

/** The canonical container name of a service: `outpost_<stack>_<service>`. */
export function containerName(stack: string, service: string): string {
  return `${NAME_PREFIX}_${stack}_${service}`;
}

/**
 * The fallback name used when the canonical one is held by a container that is not this stack's
 * (a foreign container, or another stack whose name joins to the same string).
 */
export function altContainerName(stack: string, service: string, hash: string): string {
  return `${containerName(stack, service)}_${hash.slice(0, 12)}`;
}

/** The engine name of a stack's named volume: `outpost_<stack>_<volume>`. */
export function volumeName(stack: string, volume: string): string {
  return `${NAME_PREFIX}_${stack}_${volume}`;
}

function canonicalJson(s: Service): string {
  const canon = canonicalSpec({ svc: { s } }).svc['s'];
  return JSON.stringify(canon, (_k, v: unknown) => (v instanceof Uint8Array ? toHex(v) : v));
}

/**
 * sha256 (hex) of the canonical service spec, bound to the stack and service name. Stored in the
 * `LABELS.hash` label: a container whose hash differs from the target's is replaced; one whose
 * hash matches is kept (a revision bump that leaves a service unchanged does not restart it).
 */
export function serviceHash(stack: string, service: string, spec: Service): string {
  return createHash('sha256')
    .update(JSON.stringify(['outpost.svc/1', stack, service]))
    .update('\n')
    .update(canonicalJson(spec))
    .digest('hex');
}

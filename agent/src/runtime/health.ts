/**
 * Health evaluation (pure): one service's health from its container, and a stack's from its services.
 *
 * Service health:
 * - no container → `stopped`;
 * - running with an engine healthcheck → the engine's status (`healthy`, `unhealthy`, `starting`);
 * - running without one → `healthy` once it has run `runningForMs` since its last start (a restart
 *   resets StartedAt, so "without a restart" is included), `starting` before;
 * - restarting (crash loop) → `unhealthy`; created, paused, dead → `stopped`; removing → `unknown`;
 * - exited → `stopped`, except a finished job (`rst: no`, exit code 0) → `healthy`.
 *
 * Stack health: `unknown` with no services; `stopped` when all are stopped; `unhealthy` when any is
 * unhealthy or some (not all) are stopped; otherwise `unknown` > `starting` > `healthy`.
 */
import type { Health, Service } from '../../../protocol/src/index.js';
import type { ContainerState } from './plan.js';

export interface ContainerHealth {
  readonly state: ContainerState;
  /** Engine healthcheck status, when the container has a healthcheck. */
  readonly health: 'healthy' | 'unhealthy' | 'starting' | undefined;
  /** Last start, ms since the epoch (0: never started). */
  readonly startedAtMs: number;
  readonly exitCode: number;
  readonly restartCount: number;
}

export function serviceHealth(
  c: ContainerHealth | undefined,
  s: Pick<Service, 'rst'> | undefined,
  nowMs: number,
  runningForMs: number,
): Health {
  if (!c) return 'stopped';
  switch (c.state) {
    case 'running':
      if (c.health) return c.health;
      return nowMs - c.startedAtMs >= runningForMs ? 'healthy' : 'starting';
    case 'restarting':
      return 'unhealthy';
    case 'exited':
      return s?.rst === 'no' && c.exitCode === 0 && c.startedAtMs > 0 ? 'healthy' : 'stopped';
    case 'removing':
      return 'unknown';
    default:
      return 'stopped';
  }
}

export function stackHealth(hs: readonly Health[]): Health {
  if (hs.length === 0) return 'unknown';
  const stopped = hs.filter((h) => h === 'stopped').length;
  if (stopped === hs.length) return 'stopped';
  if (stopped > 0 || hs.includes('unhealthy')) return 'unhealthy';
  if (hs.includes('unknown')) return 'unknown';
  if (hs.includes('starting')) return 'starting';
  return 'healthy';
}

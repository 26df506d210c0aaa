/**
 * Fault points for crash tests (DESIGN §8): `faultPoint('controller.after-commit-before-publish')`
 * kills this process with SIGKILL when `OUTPOST_FAULT_POINT` names that point. With
 * `OUTPOST_FAULT_SKIP=n` the first n hits pass. Never active unless the variable is set.
 */
export const FAULT_POINTS = [
  /** The publisher has committed a signed envelope as published, before the MQTT publish. */
  'controller.after-commit-before-publish',
  /** The broker has PUBACKed the publish; the controller has not yet recorded the send. */
  'controller.after-publish-before-record',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

let hits = 0;

export function faultPoint(name: FaultPoint): void {
  if (process.env['OUTPOST_FAULT_POINT'] !== name) return;
  if (hits++ < Number(process.env['OUTPOST_FAULT_SKIP'] ?? 0)) return;
  process.kill(process.pid, 'SIGKILL');
}

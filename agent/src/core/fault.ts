/**
 * Fault points for crash tests (DESIGN §8): `faultPoint('agent.mid-apply')` kills this process with
 * SIGKILL when the environment variable OUTPOST_FAULT_POINT names that point. A no-op otherwise, so it
 * is safe to leave in production paths (one string comparison).
 *
 * Points in the agent:
 * - `agent.after-commit-before-puback`  a command is journalled, its PUBACK not yet sent
 * - `agent.mid-apply`                   journal says `executing`, runtime.apply not yet called
 * - `agent.after-apply-before-record`   runtime.apply returned, outcome not yet journalled
 * - `runtime.memory.mid-apply`          MemoryRuntime created the first container of a stack
 */
export const FAULT_ENV = 'OUTPOST_FAULT_POINT';

export function faultPoint(name: string): void {
  if (process.env[FAULT_ENV] !== name) return;
  process.kill(process.pid, 'SIGKILL');
  // Block until the signal lands: nothing after the fault point may run.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10_000);
}

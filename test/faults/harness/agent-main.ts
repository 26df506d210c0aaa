/**
 * One site agent as a child process for the fault suite:
 *
 *   node --import tsx test/faults/harness/agent-main.ts <spec.json>
 *
 * The real composition root (`createAgent`) over a MemoryRuntime whose effect log (JSON lines,
 * appended synchronously, so it survives SIGKILL of this process: the "engine" outlives the agent)
 * is the site's ledger, restored on start (`restore: 'running'`), behind LedgerRuntime (DockerRuntime's
 * reconciler semantics; OUTPOST_FAULTS_RUNTIME=memory runs MemoryRuntime's own). OUTPOST_FAULT_POINT picks where the
 * process kills itself (agent/src/core/fault.ts). Logs pino JSON to stdout; SIGTERM closes cleanly.
 *
 * Two things the tests change while the agent runs, through the spec's `control` file (JSON, re-read
 * every 100 ms when its mtime changes):
 * - `clockOffsetMs`: added to the wall clock the agent sees (trusted-time and expiry scenarios: a
 *   clock at 1970, a jump forward, days offline). Monotonic timers are not affected.
 * - `diskFree`: when set, the free bytes the agent's DiskGuard sees (else statfs of the data folder).
 */
import { readFileSync, statfsSync, statSync } from 'node:fs';
import pino from 'pino';
import { createAgent } from '../../../agent/src/agent.js';
import { parseConfig } from '../../../agent/src/config.js';
import { MemoryRuntime } from '../../../agent/src/runtime/memory.js';
import type { Clock } from '../../../protocol/src/index.js';
import { LedgerRuntime } from './ledger-runtime.js';

export interface AgentSpec {
  /** Raw agent configuration (agent/src/config.ts keys). */
  readonly config: Record<string, unknown>;
  /** The site's effect ledger (MemoryRuntime effect log). */
  readonly effectLog: string;
  /** Control file (see the header). */
  readonly control: string;
  /** Delay of every runtime apply (a wider window for kills mid-apply). */
  readonly applyDelayMs?: number;
}

export interface AgentControl {
  clockOffsetMs?: number;
  diskFree?: number;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as AgentSpec;
const config = parseConfig(spec.config);

let control: AgentControl = {};
let controlMtime = -1;
const readControl = (): void => {
  try {
    const m = statSync(spec.control).mtimeMs;
    if (m === controlMtime) return;
    controlMtime = m;
    control = JSON.parse(readFileSync(spec.control, 'utf8')) as AgentControl;
  } catch {
    // absent or half-written: keep the last value
  }
};
readControl();
setInterval(readControl, 100).unref();

const clock: Clock = { now: () => Date.now() + (control.clockOffsetMs ?? 0) };
const diskFree = (): number => {
  if (control.diskFree !== undefined) return control.diskFree;
  const s = statfsSync(config.dataDir);
  return s.bavail * s.bsize;
};

const log = pino(
  { level: process.env['OUTPOST_FAULTS_AGENT_LOG'] ?? 'info' },
  pino.destination({ dest: 1, sync: true }),
);
const memory = new MemoryRuntime({
  effectLog: spec.effectLog,
  restore: 'running',
  reconcileIntervalMs: 500,
  ...(spec.applyDelayMs ? { applyDelayMs: spec.applyDelayMs } : {}),
});
// DockerRuntime's reconciler semantics over MemoryRuntime (see ledger-runtime.ts), unless asked for
// the bare MemoryRuntime.
const runtime = process.env['OUTPOST_FAULTS_RUNTIME'] === 'memory' ? memory : new LedgerRuntime(memory, 500);
const agent = createAgent({ config, runtime, log, clock, diskFree });
await agent.start();
process.on('SIGTERM', () => {
  agent.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});

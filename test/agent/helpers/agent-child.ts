/**
 * Runs one agent in a child process for crash tests: `node --import tsx agent-child.ts <spec.json>`.
 * The spec holds the raw config plus the MemoryRuntime's effect log and restore mode, so effects are
 * counted across SIGKILLs (OUTPOST_FAULT_POINT picks where the process dies). Logs JSON to stdout.
 * SIGTERM closes the agent cleanly.
 */
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { createAgent } from '../../../agent/src/agent.js';
import { parseConfig } from '../../../agent/src/config.js';
import { MemoryRuntime } from '../../../agent/src/runtime/memory.js';

export interface ChildSpec {
  readonly config: Record<string, unknown>;
  readonly effectLog: string;
  readonly restore: 'none' | 'running' | 'stopped';
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildSpec;
const config = parseConfig(spec.config);
const log = pino({ level: 'info' }, pino.destination({ dest: 1, sync: true }));
const runtime = new MemoryRuntime({
  effectLog: spec.effectLog,
  restore: spec.restore,
  reconcileIntervalMs: 100,
});
const agent = createAgent({ config, runtime, log });
await agent.start();
process.on('SIGTERM', () => {
  agent.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});

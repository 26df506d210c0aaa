/**
 * A real agent (createAgent, real SQLite, real MQTT over TLS) on a MemoryRuntime, in a child process
 * so the test can SIGKILL it and the broker publishes its last will:
 * `node --import tsx agent-child.ts <spec.json>`.
 *
 * The test steers the runtime through a control file of JSON lines (polled every 50 ms), each applied
 * once, and the child prints `control <n> ok` (or `control <n> error: ...`) after line n:
 *   {"op":"unhealthy","stack":"web","svc":"web","value":true}   service health turns unhealthy
 *   {"op":"crash","stack":"web","svc":"web"}                     the service exits (restarted)
 *   {"op":"healthFailure","stack":"web","rev":2}                 that revision fails its health gate
 *   {"op":"clear","stack":"web"}                                 no more injected failures
 * SIGTERM closes the agent cleanly. Logs JSON to stdout.
 */
import { existsSync, readFileSync } from 'node:fs';
import pino from 'pino';
import { createAgent } from '../../../agent/src/agent.js';
import { parseConfig } from '../../../agent/src/config.js';
import { MemoryRuntime } from '../../../agent/src/runtime/memory.js';

export interface AgentChildSpec {
  readonly config: Record<string, unknown>;
  readonly controlFile: string;
}

export type ControlOp =
  | { op: 'unhealthy'; stack: string; svc: string; value: boolean }
  | { op: 'crash'; stack: string; svc: string }
  | { op: 'healthFailure'; stack: string; rev?: number }
  | { op: 'clear'; stack?: string };

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as AgentChildSpec;
const log = pino({ level: 'info' }, pino.destination({ dest: 1, sync: true }));
const runtime = new MemoryRuntime({ reconcileIntervalMs: 100 });
const agent = createAgent({ config: parseConfig(spec.config), runtime, log });
await agent.start();

let done = 0;
const timer = setInterval(() => {
  if (!existsSync(spec.controlFile)) return;
  const lines = readFileSync(spec.controlFile, 'utf8').split('\n').filter(Boolean);
  for (; done < lines.length; done++) {
    try {
      const c = JSON.parse(lines[done]!) as ControlOp;
      if (c.op === 'unhealthy') runtime.setUnhealthy(c.stack, c.svc, c.value);
      else if (c.op === 'crash') runtime.crash(c.stack, c.svc);
      else if (c.op === 'healthFailure') runtime.injectHealthFailure(c.stack, c.rev);
      else if (c.op === 'clear') runtime.clearFailures(c.stack);
      process.stdout.write(`control ${done + 1} ok\n`);
    } catch (err) {
      process.stdout.write(`control ${done + 1} error: ${(err as Error).message}\n`);
    }
  }
}, 50);

process.on('SIGTERM', () => {
  clearInterval(timer);
  agent.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});

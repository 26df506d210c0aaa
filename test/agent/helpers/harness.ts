/**
 * Builds a test site: PKI files in a temp certs folder, a config pointing at a broker, and an agent on a
 * MemoryRuntime (or a given runtime). Short timings so tests run quickly; real SQLite, real MQTT.
 */
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { type Agent, createAgent } from '../../../agent/src/agent.js';
import { type AgentConfig, parseConfig } from '../../../agent/src/config.js';
import { MemoryRuntime, type MemoryRuntimeOptions } from '../../../agent/src/runtime/memory.js';
import type { StackRuntime } from '../../../agent/src/runtime/types.js';
import type { Clock } from '../../../protocol/src/index.js';
import { tmpDir } from '../../helpers/index.js';
import { makePki, type TestPki } from './pki.js';

export function testLogger(name = 'agent'): Logger {
  return pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent', name });
}

/** Fast timings for tests; any key of the config can be overridden. */
export const FAST = {
  settleMs: 100,
  stateMinIntervalMs: 50,
  gapHoldMs: 30_000,
  reconnectMinMs: 50,
  reconnectMaxMs: 200,
  keepaliveSec: 30,
  connectTimeoutMs: 2000,
  diskMinFreeBytes: 0,
  heartbeatIntervalSec: 3600,
} as const;

export interface TestSite {
  readonly dir: string;
  readonly pki: TestPki;
  config(overrides?: Record<string, unknown>): AgentConfig;
}

export function makeSite(site = 'site-a', opts: { crit?: number; dir?: string } = {}): TestSite {
  const dir = opts.dir ?? tmpDir('agent');
  const certsDir = join(dir, 'certs');
  const pki = makePki(certsDir, site, opts);
  return {
    dir,
    pki,
    config: (overrides = {}) =>
      parseConfig({
        site,
        broker: 'mqtt://127.0.0.1:1',
        certsDir,
        dataDir: join(dir, 'data'),
        ...FAST,
        ...overrides,
      }),
  };
}

export interface RunningAgent {
  readonly agent: Agent;
  readonly runtime: StackRuntime;
  readonly config: AgentConfig;
  close(): Promise<void>;
}

export async function startAgent(
  site: TestSite,
  overrides: Record<string, unknown> = {},
  opts: {
    runtime?: StackRuntime;
    memory?: MemoryRuntimeOptions;
    diskFree?: () => number;
    log?: Logger;
    clock?: Clock;
  } = {},
): Promise<RunningAgent & { memory: MemoryRuntime }> {
  const config = site.config(overrides);
  const runtime = opts.runtime ?? new MemoryRuntime({ reconcileIntervalMs: 200, ...opts.memory });
  const agent = createAgent({
    config,
    runtime,
    log: opts.log ?? testLogger(config.site),
    ...(opts.diskFree ? { diskFree: opts.diskFree } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  await agent.start();
  let closed = false;
  return {
    agent,
    runtime,
    memory: runtime as MemoryRuntime,
    config,
    async close() {
      if (closed) return;
      closed = true;
      await agent.close();
    },
  };
}

/**
 * The fleet simulator: `startFleet()` spreads thousands of simulated sites over a few child
 * processes (scripts/sim/fleet-child.ts), each site on its own MQTT connection, and resolves once all
 * have connected and subscribed. `stats()` sums the children's counters; `close()` stops every site
 * (the agents publish their offline status and disconnect cleanly) and every child.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FleetChildInit, FleetChildReply, FleetChildStats, SiteKind } from './fleet-child.js';
import { nodeFlags, procCpuSec, Rpc, waitExit } from './proc.js';

const CHILD = join(import.meta.dirname, 'fleet-child.ts');
const REPO = join(import.meta.dirname, '..', '..');

export interface FleetOptions {
  readonly kind: SiteKind;
  readonly sites: readonly string[];
  /** Child processes (default: one per 2,500 sites, at least 1). */
  readonly workers?: number;
  readonly url: string;
  readonly certsDir: string;
  /** Folder for `real` sites' databases (one sub-folder per site). */
  readonly dataRoot: string;
  readonly agentConfig?: Record<string, unknown>;
  /** Sites connecting at once per child while starting (default 100). */
  readonly connectParallel?: number;
  /** Give up waiting for connections after this long (default 300 s). */
  readonly timeoutMs?: number;
}

export interface Fleet {
  readonly size: number;
  readonly pids: readonly number[];
  /** Each site's uplink public key (base64), derived in the children. */
  readonly keys: ReadonlyMap<string, string>;
  /** Connects every site; resolves once all have connected and subscribed (throws if some did not). */
  connect(): Promise<{ ms: number }>;
  stats(): Promise<FleetChildStats>;
  /** Each named site's own view (diagnostics). */
  inspect(sites: readonly string[]): Promise<Record<string, unknown>>;
  /** CPU seconds used by the children so far. */
  cpuSec(): number;
  close(): Promise<void>;
}

const sum = (xs: readonly FleetChildStats[]): FleetChildStats => ({
  sites: xs.reduce((a, x) => a + x.sites, 0),
  ready: xs.reduce((a, x) => a + x.ready, 0),
  connacks: xs.reduce((a, x) => a + x.connacks, 0),
  sessionPresent: xs.reduce((a, x) => a + x.sessionPresent, 0),
  sessionLost: xs.reduce((a, x) => a + x.sessionLost, 0),
  commandsReceived: xs.reduce((a, x) => a + x.commandsReceived, 0),
  connectFailures: xs.reduce((a, x) => a + x.connectFailures, 0),
  rss: xs.reduce((a, x) => a + x.rss, 0),
  baseRss: xs.reduce((a, x) => a + x.baseRss, 0),
  heapUsed: xs.reduce((a, x) => a + x.heapUsed, 0),
});

/** Forks the children and builds the sites (not yet connected: call `connect()`). */
export async function startFleet(o: FleetOptions): Promise<Fleet> {
  const workers = Math.max(1, Math.min(o.sites.length, o.workers ?? Math.ceil(o.sites.length / 2500)));
  mkdirSync(o.dataRoot, { recursive: true });
  const children: ChildProcess[] = [];
  const rpcs: Rpc[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(
      children.map(async (c, i) => {
        if (c.exitCode === null && c.signalCode === null && c.connected) {
          await rpcs[i]!.call({ op: 'close' }, 120_000).catch(() => c.kill('SIGKILL'));
        }
        await waitExit(c, 30_000);
      }),
    );
  };
  for (let w = 0; w < workers; w++) {
    const child = fork(CHILD, [], {
      cwd: REPO,
      execArgv: ['--import', 'tsx', ...nodeFlags()],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    rpcs.push(new Rpc(child, `fleet worker ${w}`));
  }
  const per = Math.ceil(o.sites.length / workers);
  const timeoutMs = o.timeoutMs ?? 300_000;
  const keys = new Map<string, string>();
  try {
    const prepared = await Promise.all(
      rpcs.map((rpc, w) => {
        const init: FleetChildInit = {
          kind: o.kind,
          sites: o.sites.slice(w * per, (w + 1) * per),
          url: o.url,
          certsDir: o.certsDir,
          dataRoot: o.dataRoot,
          ...(o.agentConfig ? { agentConfig: o.agentConfig } : {}),
          connectParallel: o.connectParallel ?? 100,
          timeoutMs,
        };
        return rpc.call<Extract<FleetChildReply, { op: 'prepared' }>>({ op: 'prepare', ...init }, 300_000);
      }),
    );
    for (const p of prepared) for (const [site, key] of p.keys) keys.set(site, key);
  } catch (err) {
    await closeAll();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    size: o.sites.length,
    pids: children.map((c) => c.pid!),
    keys,
    async connect() {
      const t0 = performance.now();
      const started = await Promise.all(
        rpcs.map((rpc) =>
          rpc.call<Extract<FleetChildReply, { op: 'started' }>>({ op: 'connect' }, timeoutMs + 60_000),
        ),
      );
      const ready = started.reduce((a, s) => a + s.ready, 0);
      if (ready < o.sites.length) {
        throw new Error(`fleet: only ${ready} of ${o.sites.length} sites connected within ${timeoutMs} ms`);
      }
      return { ms: performance.now() - t0 };
    },
    async stats() {
      const all = await Promise.all(
        rpcs.map((r) => r.call<Extract<FleetChildReply, { op: 'stats' }>>({ op: 'stats' }, 60_000)),
      );
      return sum(all.map((a) => a.stats));
    },
    async inspect(sites) {
      const all = await Promise.all(
        rpcs.map((r) =>
          r.call<Extract<FleetChildReply, { op: 'inspected' }>>({ op: 'inspect', sites: [...sites] }, 60_000),
        ),
      );
      return Object.assign({}, ...all.map((a) => a.sites));
    },
    cpuSec: () => children.reduce((a, c) => a + procCpuSec(c.pid), 0),
    close() {
      closed ??= closeAll();
      return closed;
    },
  };
}

/**
 * One process of the fleet simulator: hosts many simulated sites, each speaking the real protocol
 * over its own MQTT connection (client id = site id, clean=false, QoS 1), started by fleet.ts with
 * `fork()`. Kinds of site (see scripts/sim/README.md for what each leaves out):
 *
 * - `real`:  the product's agent, `createAgent` with a MemoryRuntime and its own SQLite file
 *            (WAL, synchronous=FULL) under the data folder;
 * - `memdb`: the same `createAgent`, but its database is an in-memory SQLite (`:memory:`, migrated
 *            with the agent's own migrations): every line of the agent core runs, nothing is fsync'd;
 * - `lite`:  `SimAgent` (sim-agent.ts): the protocol and journal logic without SQLite and timers.
 *
 * IPC (each request carries an `id`, echoed in its answer): `{op:'prepare', ...FleetChildInit}` builds
 * the sites and answers `prepared` with their uplink public keys (derived here, in parallel across
 * children, for the controller's enrolment); `{op:'connect'}` starts them and answers `started` once
 * every site has connected and subscribed (or at the timeout); `{op:'stats'}`; `{op:'close'}` (answered,
 * then exit).
 */

import { join } from 'node:path';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { pino } from 'pino';
import { type Agent, createAgent } from '../../agent/src/agent.js';
import { parseConfig } from '../../agent/src/config.js';
import { migrate } from '../../agent/src/core/db.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { uplinkSigner } from './keys.js';
import { SimAgent } from './sim-agent.js';

export type SiteKind = 'real' | 'memdb' | 'lite';

export interface FleetChildInit {
  readonly kind: SiteKind;
  readonly sites: readonly string[];
  readonly url: string;
  /** `outpost certs` folder: the provisioned trust root (trust/trust-root.cbor). */
  readonly certsDir: string;
  /** Where `real` sites keep their SQLite files (one folder per site). */
  readonly dataRoot: string;
  /** Agent configuration overrides (agent/src/config.ts keys). */
  readonly agentConfig?: Record<string, unknown>;
  /** Sites connecting at once while starting. */
  readonly connectParallel: number;
  readonly timeoutMs: number;
}

export interface FleetChildStats {
  readonly sites: number;
  /** Connected with the command subscription in place. */
  readonly ready: number;
  /** CONNACKs seen, and how many of them resumed a stored session (sessionPresent). */
  readonly connacks: number;
  readonly sessionPresent: number;
  /** Sites whose latest CONNACK had no stored session. */
  readonly sessionLost: number;
  readonly commandsReceived: number;
  /** Connection attempts that closed before their CONNACK (refused, reset or timed out). */
  readonly connectFailures: number;
  readonly rss: number;
  /** RSS of this process before it built any site (tsx, modules). */
  readonly baseRss: number;
  readonly heapUsed: number;
}

export type FleetChildReply =
  | { op: 'prepared'; id: number; keys: [site: string, uplinkKeyB64: string][] }
  | { op: 'started'; id: number; ms: number; ready: number }
  | { op: 'stats'; id: number; stats: FleetChildStats }
  | { op: 'closed'; id: number }
  | { op: 'inspected'; id: number; sites: Record<string, unknown> }
  | { op: 'error'; id?: number; message: string };

/** What the child needs from a site, whatever its kind. */
interface Site {
  readonly uplinkPub: Uint8Array;
  inspect(): Record<string, unknown>;
  start(): Promise<void>;
  ready(): boolean;
  close(): Promise<void>;
}

const log = pino({ level: process.env['SIM_AGENT_LOG'] ?? 'silent' });
const baseRss = process.memoryUsage().rss;

let sites: Site[] = [];
let connacks = 0;
let sessionPresent = 0;
const lastSession = new Map<string, boolean>();
let commandsReceived = 0;
let connectFailures = 0;

function observe(site: string, client: mqtt.MqttClient): void {
  let up = false;
  client.on('close', () => {
    if (!up) connectFailures++;
    up = false;
  });
  client.on('connect', (ack) => {
    up = true;
    connacks++;
    if (ack.sessionPresent) sessionPresent++;
    lastSession.set(site, ack.sessionPresent === true);
  });
  client.on('packetreceive', (p) => {
    if (p.cmd === 'publish') commandsReceived++;
  });
}

function makeSite(init: FleetChildInit, site: string): Site {
  const signer = uplinkSigner(site);
  if (init.kind === 'lite') {
    const a = new SimAgent({
      site,
      signer,
      url: init.url,
      certsDir: init.certsDir,
      ...(init.agentConfig ?? {}),
      onClient: (c) => observe(site, c),
    });
    return {
      uplinkPub: signer.publicKey,
      inspect: () => a.inspect(),
      start: () => a.start(),
      ready: () => a.ready,
      close: () => a.close(),
    };
  }
  const config = parseConfig({
    site,
    broker: init.url,
    certsDir: init.certsDir,
    dataDir: join(init.dataRoot, site),
    diskMinFreeBytes: 0,
    ...(init.agentConfig ?? {}),
  });
  const db = init.kind === 'memdb' ? new Database(':memory:') : undefined;
  if (db) migrate(db);
  const agent: Agent = createAgent({
    config,
    // The Docker runtime's default reconcile period (a MemoryRuntime would default to 1 s).
    runtime: new MemoryRuntime({ reconcileIntervalMs: 30_000 }),
    log,
    signer,
    diskFree: () => 1e12,
    ...(db ? { db } : {}),
    mqtt: (url, opts) => {
      const c = mqtt.connect(url, opts);
      observe(site, c);
      return c;
    },
  });
  return {
    uplinkPub: signer.publicKey,
    inspect: () => ({ ...agent.status() }),
    start: () => agent.start(),
    ready: () => agent.status().connected,
    async close() {
      await agent.close();
      db?.close();
    },
  };
}

async function inBatches<T>(
  items: readonly T[],
  parallel: number,
  fn: (x: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
}

async function waitReady(s: Site, until: number): Promise<void> {
  while (!s.ready() && performance.now() < until) await new Promise((r) => setTimeout(r, 10));
}

let init: FleetChildInit | undefined;

function prepare(i: FleetChildInit): [string, string][] {
  init = i;
  sites = i.sites.map((s) => makeSite(i, s));
  return sites.map((s, n) => [i.sites[n]!, Buffer.from(s.uplinkPub).toString('base64')]);
}

async function connectAll(): Promise<{ ms: number; ready: number }> {
  if (!init) throw new Error('connect before prepare');
  const t0 = performance.now();
  const until = t0 + init.timeoutMs;
  await inBatches(sites, init.connectParallel, async (s) => {
    await s.start();
    await waitReady(s, until);
  });
  return { ms: performance.now() - t0, ready: sites.filter((s) => s.ready()).length };
}

function stats(): FleetChildStats {
  const m = process.memoryUsage();
  let lost = 0;
  for (const v of lastSession.values()) if (!v) lost++;
  return {
    sites: sites.length,
    ready: sites.filter((s) => s.ready()).length,
    connacks,
    sessionPresent,
    sessionLost: lost,
    commandsReceived,
    connectFailures,
    rss: m.rss,
    baseRss,
    heapUsed: m.heapUsed,
  };
}

function send(m: FleetChildReply): void {
  process.send?.(m);
}

let closing: Promise<void> | undefined;
function closeAll(): Promise<void> {
  closing ??= inBatches(sites, 200, (s) => s.close().catch(() => undefined));
  return closing;
}

process.on('message', (m: { op: string; id: number } & Partial<FleetChildInit>) => {
  if (m.op === 'prepare') {
    try {
      send({ op: 'prepared', id: m.id, keys: prepare(m as unknown as FleetChildInit) });
    } catch (err) {
      send({ op: 'error', id: m.id, message: (err as Error).stack ?? String(err) });
    }
  } else if (m.op === 'connect') {
    connectAll().then(
      (r) => send({ op: 'started', id: m.id, ...r }),
      (err: unknown) => send({ op: 'error', id: m.id, message: (err as Error).stack ?? String(err) }),
    );
  } else if (m.op === 'inspect') {
    const want = new Set((m as unknown as { sites: string[] }).sites);
    const out: Record<string, unknown> = {};
    sites.forEach((s, i) => {
      const id = init?.sites[i];
      if (id && want.has(id)) out[id] = s.inspect();
    });
    send({ op: 'inspected', id: m.id, sites: out });
  } else if (m.op === 'stats') {
    send({ op: 'stats', id: m.id, stats: stats() });
  } else if (m.op === 'close') {
    void closeAll().then(() => {
      send({ op: 'closed', id: m.id });
      setImmediate(() => process.exit(0));
    });
  }
});
process.on('disconnect', () => {
  void closeAll().then(() => process.exit(0));
});

/**
 * The whole system as child processes on loopback, for fault injection (DESIGN §8):
 *
 *   agents (test/faults/harness/agent-main.ts, MemoryRuntime + effect ledger, own SQLite)
 *     └─ one TCP fault proxy per site (test/helpers/fault-proxy.ts) ─┐
 *   controller (`outpost controller`, own SQLite, REST API) ──────────┼─ broker (`outpost broker`,
 *                                                                     │   TLS + client certs + ACL,
 *   the test (admin token over HTTP; admin certificate over MQTT) ────┘   durable SQLite)
 *
 * Everything speaks TLS 1.3 with certificates from the certs library; sites are enrolled through
 * the REST API with the admin token. Every component can be SIGKILLed (now, or at a named fault
 * point through OUTPOST_FAULT_POINT) and restarted on the same files and ports. Usable from vitest
 * and from plain scripts (scripts/soak.ts): nothing here needs a running test.
 */
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import {
  createFaultProxy,
  type FaultProxy,
  restartablePorts,
  type Spawned,
  waitFor,
} from '../../helpers/index.js';
import type { AgentControl, AgentSpec } from './agent-main.js';
import { spawnChild } from './child.js';
import { compose } from './compose.js';
import { type CommandRow, readCommands, readEnvelope, STACK_COMMANDS } from './controller-db.js';
import { checkLedger, type LedgerReport, OPEN_STATUSES } from './ledger.js';
import { AdminMqtt, type StatusWatch } from './mqtt.js';
import { type FaultPki, makeFaultPki } from './pki.js';

export const ADMIN_TOKEN = 'faults-admin-token-0123456789abcdefghij';
const ENTRY = 'cli/main.ts';

/** Agent settings for tests: short timers, everything else the product default. */
export const AGENT_DEFAULTS: Readonly<Record<string, unknown>> = {
  settleMs: 100,
  stateMinIntervalMs: 250,
  gapHoldMs: 20_000,
  reconnectMinMs: 100,
  reconnectMaxMs: 1_000,
  keepaliveSec: 10,
  connectTimeoutMs: 5_000,
  diskMinFreeBytes: 0,
  diskCheckMs: 200,
  heartbeatIntervalSec: 3600,
  healthRunningForMs: 0,
  logLevel: 'info',
};

/** Controller settings for tests (its config file). */
export const CONTROLLER_DEFAULTS = {
  logLevel: 'info',
  outbox: { retryMs: 1_000, maxRetryMs: 4_000, tickMs: 200, heartbeatSec: 0 },
} as const;

/** Broker settings (OUTPOST_BROKER_* environment): every test connects from 127.0.0.1. */
export const BROKER_ENV: Readonly<Record<string, string>> = {
  OUTPOST_BROKER_RATE_LIMIT_PER_IP_BURST: '5000',
  OUTPOST_BROKER_RATE_LIMIT_PER_IP_PER_SEC: '5000',
  OUTPOST_BROKER_RATE_LIMIT_GLOBAL_BURST: '5000',
  OUTPOST_BROKER_RATE_LIMIT_GLOBAL_PER_SEC: '5000',
  OUTPOST_BROKER_TLS_WATCH_CRL_MS: '0',
};

export interface SystemOptions {
  readonly sites: readonly string[];
  /** Working folder (default: a new one under the run's scratch root or the OS temp dir). */
  readonly dir?: string;
  /** Agent configuration overrides for every site, and per site. */
  readonly agent?: Record<string, unknown>;
  readonly agentFor?: Record<string, Record<string, unknown>>;
  /** Controller configuration (merged into CONTROLLER_DEFAULTS, one level deep). */
  readonly controller?: Record<string, unknown>;
  readonly controllerEnv?: Record<string, string>;
  readonly brokerEnv?: Record<string, string>;
  /** Also a plain loopback listener trusting claimed `role:name` usernames (raw-socket tests). */
  readonly plain?: boolean;
  /** Delay of each runtime apply at every agent. */
  readonly applyDelayMs?: number;
  /** Per-site data folder (e.g. a small tmpfs), default `<dir>/agents/<site>/data`. */
  readonly dataDirFor?: Record<string, string>;
  /** Don't start the agents (start them with startAgent). */
  readonly noAgents?: boolean;
  /** Copy children's output to stderr. */
  readonly echo?: boolean;
}

export interface SiteAgent {
  readonly site: string;
  readonly proxy: FaultProxy;
  readonly dir: string;
  readonly dataDir: string;
  readonly effectLog: string;
  readonly controlFile: string;
  proc: Spawned | undefined;
  /** Extra configuration for the next start. */
  config: Record<string, unknown>;
}

export interface Created {
  readonly site: string;
  readonly seq: number;
  readonly stack: string;
  readonly rev: number;
}

export interface DeployResult {
  /** HTTP status, or 'down' when the controller did not answer (refused, reset, killed mid-request). */
  readonly status: number | 'down';
  readonly rev?: number;
  readonly commands: Created[];
}

// biome-ignore lint/suspicious/noExplicitAny: JSON bodies of the REST API
type Json = any;

function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export class FaultSystem {
  readonly agents = new Map<string, SiteAgent>();
  /** Every command the API answered 2xx for (I1 is about these). */
  readonly created: Created[] = [];
  /** Faults injected, by kind (reported by the soak and the docs). */
  readonly faults: Record<string, number> = {};
  /** Pids this harness killed (as opposed to ones that died at their own fault point). */
  readonly killed = new Set<number>();
  broker: Spawned | undefined;
  controller: Spawned | undefined;
  private revs = new Map<string, number>();
  private closed = false;

  private constructor(
    readonly opts: SystemOptions,
    readonly dir: string,
    readonly pki: FaultPki,
    readonly ports: { broker: number; plain: number; metrics: number; api: number },
  ) {
    this.mqtt = new AdminMqtt(pki.layout, ports.broker);
  }

  private readonly mqtt: AdminMqtt;

  static async start(opts: SystemOptions): Promise<FaultSystem> {
    const dir = opts.dir ?? makeDir();
    mkdirSync(dir, { recursive: true });
    const pki = await makeFaultPki(dir, opts.sites);
    const [broker, plain, metrics, api] = (await restartablePorts(4)) as [number, number, number, number];
    const sys = new FaultSystem(opts, dir, pki, { broker, plain, metrics, api });
    try {
      for (const site of opts.sites) await sys.addAgent(site);
      await Promise.all([sys.startBroker(), sys.startController()]);
      await sys.enrol(opts.sites);
      if (!opts.noAgents) await Promise.all(opts.sites.map((s) => sys.startAgent(s)));
    } catch (err) {
      await sys.close();
      throw err;
    }
    return sys;
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.ports.api}`;
  }

  get controllerDb(): string {
    return join(this.dir, 'controller', 'controller.db');
  }

  get brokerDb(): string {
    return join(this.dir, 'broker', 'broker.db');
  }

  /** Writes a child's output to `<dir>/logs/<name>-<pid>.log` when it exits (post-mortems). */
  private keepLog(proc: Spawned): Spawned {
    const logs = join(this.dir, 'logs');
    mkdirSync(logs, { recursive: true });
    const file = join(logs, `${proc.name.replace(/[^A-Za-z0-9_.-]+/g, '_')}-${proc.pid}.log`);
    void proc.exited.then(() => {
      try {
        writeFileSync(file, proc.output());
      } catch {
        // folder removed meanwhile
      }
    });
    return proc;
  }

  count(kind: string, n = 1): void {
    this.faults[kind] = (this.faults[kind] ?? 0) + n;
  }

  // ---- broker -------------------------------------------------------------------------------------

  async startBroker(): Promise<Spawned> {
    const args = [
      'broker',
      '--data',
      join(this.dir, 'broker'),
      '--certs',
      this.pki.dir,
      '--tls-port',
      String(this.ports.broker),
      '--tls-host',
      '127.0.0.1',
      '--metrics-port',
      String(this.ports.metrics),
      ...(this.opts.plain ? ['--plain-port', String(this.ports.plain), '--insecure-trust-client-id'] : []),
    ];
    const proc = spawnChild(
      ENTRY,
      args,
      { ...BROKER_ENV, OUTPOST_LOG_LEVEL: 'info', ...this.opts.brokerEnv },
      { name: 'broker', ...(this.opts.echo ? { echo: true } : {}) },
    );
    this.broker = this.keepLog(proc);
    await proc.waitForOutput('broker listening', { timeoutMs: 60_000 });
    return proc;
  }

  async killBroker(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.broker;
    if (!p || p.exitInfo) return;
    this.killed.add(p.pid);
    await p.kill(signal, { timeoutMs: 15_000 });
    if (signal === 'SIGKILL') this.count('broker SIGKILL');
  }

  /** RSS of the broker process in kB. */
  brokerRssKb(): number | undefined {
    return this.broker ? procStatusKb(this.broker.pid, 'VmRSS') : undefined;
  }

  /** Size in bytes of the broker's database files (db + WAL). */
  brokerDbBytes(): number {
    let n = 0;
    for (const f of [this.brokerDb, `${this.brokerDb}-wal`]) {
      try {
        n += statSync(f).size;
      } catch {
        // absent
      }
    }
    return n;
  }

  /** One sample of a Prometheus metric of the broker (sum over the matching label sets). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const r = await fetch(`http://127.0.0.1:${this.ports.metrics}/metrics`, {
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      const want = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
      if (want) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  // ---- controller ---------------------------------------------------------------------------------

  async startController(opts: { fault?: string; skip?: number } = {}): Promise<Spawned> {
    const cfg = this.opts.controller ?? {};
    const config: Record<string, unknown> = {
      ...CONTROLLER_DEFAULTS,
      ...cfg,
      outbox: { ...CONTROLLER_DEFAULTS.outbox, ...(cfg['outbox'] as object | undefined) },
      signing: { kid: this.pki.signingKid },
    };
    const file = join(this.dir, 'controller.json');
    writeFileSync(file, JSON.stringify(config));
    const proc = spawnChild(
      ENTRY,
      [
        'controller',
        '--config',
        file,
        '--data',
        join(this.dir, 'controller'),
        '--certs',
        this.pki.dir,
        '--broker',
        `mqtts://127.0.0.1:${this.ports.broker}`,
        '--port',
        String(this.ports.api),
      ],
      {
        OUTPOST_ADMIN_TOKEN: ADMIN_TOKEN,
        OUTPOST_FAULT_POINT: opts.fault,
        OUTPOST_FAULT_SKIP: opts.skip === undefined ? undefined : String(opts.skip),
        ...this.opts.controllerEnv,
      },
      { name: `controller${opts.fault ? `(${opts.fault})` : ''}`, ...(this.opts.echo ? { echo: true } : {}) },
    );
    this.controller = this.keepLog(proc);
    await proc.waitForOutput('controller API listening', { timeoutMs: 60_000 });
    return proc;
  }

  async killController(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.controller;
    if (!p || p.exitInfo) return;
    this.killed.add(p.pid);
    await p.kill(signal, { timeoutMs: 15_000 });
    if (signal === 'SIGKILL') this.count('controller SIGKILL');
  }

  // ---- agents -------------------------------------------------------------------------------------

  /** Makes a site's folder, proxy and certificate (it is enrolled by start() or enrol()). */
  async addAgent(site: string): Promise<SiteAgent> {
    const existing = this.agents.get(site);
    if (existing) return existing;
    await this.pki.addSite(site);
    const dir = join(this.dir, 'agents', site);
    mkdirSync(dir, { recursive: true });
    const controlFile = join(dir, 'control.json');
    writeFileSync(controlFile, '{}');
    const a: SiteAgent = {
      site,
      dir,
      dataDir: this.opts.dataDirFor?.[site] ?? join(dir, 'data'),
      effectLog: join(dir, 'effects.jsonl'),
      controlFile,
      proxy: await createFaultProxy({ targetPort: this.ports.broker }),
      proc: undefined,
      config: {},
    };
    this.agents.set(site, a);
    return a;
  }

  agent(site: string): SiteAgent {
    const a = this.agents.get(site);
    if (!a) throw new Error(`no agent ${site}`);
    return a;
  }

  /** Starts the site's agent (optionally armed with a fault point); waits for its command subscription. */
  async startAgent(
    site: string,
    opts: { fault?: string; wait?: 'subscribed' | 'started' | false } = {},
  ): Promise<Spawned> {
    const a = this.agent(site);
    if (a.proc && !a.proc.exitInfo) throw new Error(`agent ${site} is running`);
    const spec: AgentSpec = {
      config: {
        ...AGENT_DEFAULTS,
        site,
        broker: `mqtts://127.0.0.1:${a.proxy.port}`,
        certsDir: this.pki.dir,
        dataDir: a.dataDir,
        ...this.opts.agent,
        ...this.opts.agentFor?.[site],
        ...a.config,
      },
      effectLog: a.effectLog,
      control: a.controlFile,
      ...(this.opts.applyDelayMs ? { applyDelayMs: this.opts.applyDelayMs } : {}),
    };
    const file = join(a.dir, 'spec.json');
    writeFileSync(file, JSON.stringify(spec));
    const proc = spawnChild(
      'test/faults/harness/agent-main.ts',
      [file],
      { OUTPOST_FAULT_POINT: opts.fault },
      {
        name: `agent-${site}${opts.fault ? `(${opts.fault})` : ''}`,
        ...(this.opts.echo ? { echo: true } : {}),
      },
    );
    a.proc = this.keepLog(proc);
    const wait = opts.wait ?? 'subscribed';
    if (wait === 'subscribed') await proc.waitForOutput('"msg":"subscribed"', { timeoutMs: 60_000 });
    else if (wait === 'started') await proc.waitForOutput('"msg":"agent started"', { timeoutMs: 60_000 });
    return proc;
  }

  async killAgent(site: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.agent(site).proc;
    if (!p || p.exitInfo) return;
    this.killed.add(p.pid);
    await p.kill(signal, { timeoutMs: 15_000 });
    if (signal === 'SIGKILL') this.count('agent SIGKILL');
  }

  /** Changes what the running agent sees (clock offset, free disk); applied within ~100 ms. */
  setControl(site: string, control: AgentControl): void {
    writeFileSync(this.agent(site).controlFile, JSON.stringify(control));
  }

  // ---- REST API -----------------------------------------------------------------------------------

  async api(method: string, path: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const r = await fetch(`${this.apiUrl}/v1${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  }

  async enrol(sites: readonly string[]): Promise<void> {
    const g = await this.api('GET', '/groups/faults').catch(() => undefined);
    if (g?.status !== 200) {
      const r = await this.api('POST', '/groups', { name: 'faults' });
      if (r.status !== 201) throw new Error(`group: ${r.status} ${JSON.stringify(r.json)}`);
    }
    for (const id of sites) {
      await this.addAgent(id);
      const r = await this.api('POST', '/sites', {
        id,
        uplinkKey: this.pki.uplinkPem(id),
        groups: ['faults'],
      });
      if (r.status !== 201) throw new Error(`enrol ${id}: ${r.status} ${JSON.stringify(r.json)}`);
    }
  }

  /**
   * Pushes a new revision of `stack` (unique content) and deploys it to `sites`. A 2xx answer's
   * commands are recorded in `created` (I1 holds for exactly these). Never throws for a dead controller.
   */
  async deploy(
    stack: string,
    sites: readonly string[],
    opts: { ttlSec?: number; pad?: number; services?: readonly string[] } = {},
  ): Promise<DeployResult> {
    let rev: number;
    try {
      rev = await this.push(stack, opts);
    } catch (err) {
      return { status: (err as { status?: number }).status ?? 'down', commands: [] };
    }
    try {
      const r = await this.api('POST', '/deployments', {
        stack,
        rev,
        target: { sites: [...sites] },
        ...(opts.ttlSec ? { ttlSec: opts.ttlSec } : {}),
      });
      if (r.status !== 201) return { status: r.status, rev, commands: [] };
      const commands = (r.json.commands as { site: string; seq: number }[]).map((c) => ({
        site: c.site,
        seq: c.seq,
        stack,
        rev,
      }));
      this.created.push(...commands);
      return { status: 201, rev, commands };
    } catch {
      return { status: 'down', commands: [] };
    }
  }

  /**
   * Pushes a new revision of `stack` (unique content) and returns its number; throws (with `status`
   * when the controller answered) otherwise.
   */
  async push(stack: string, opts: { pad?: number; services?: readonly string[] } = {}): Promise<number> {
    const n = (this.revs.get(stack) ?? 0) + 1;
    this.revs.set(stack, n);
    const push = await this.api('POST', `/stacks/${stack}/revisions`, {
      compose: compose(n, opts.services, opts.pad),
    });
    if (push.status !== 201 && push.status !== 200)
      throw Object.assign(new Error('push'), { status: push.status });
    return push.json.revision.rev as number;
  }

  // ---- controller database (read-only) ------------------------------------------------------------

  /** Stack commands (or those matching `where`) from the controller's database, read directly. */
  commands(where = STACK_COMMANDS): CommandRow[] {
    return readCommands(this.controllerDb, where);
  }

  command(site: string, seq: number): CommandRow | undefined {
    return this.commands(`site = '${site.replace(/'/g, '')}' AND seq = ${Math.trunc(seq)}`)[0];
  }

  /** The signed envelope the controller committed for (site, seq). */
  envelope(site: string, seq: number): Uint8Array {
    return readEnvelope(this.controllerDb, site, seq);
  }

  /** Acks the controller received from a site (REST API, newest first). */
  async acks(
    site: string,
  ): Promise<{ st: string; seq: number | null; rc: string | null; matched: boolean }[]> {
    const r = await this.api('GET', `/sites/${site}/acks?limit=500`);
    if (r.status !== 200) throw new Error(`acks ${site}: ${r.status}`);
    return r.json.acks;
  }

  /** Stack commands not yet final. */
  open(): CommandRow[] {
    return this.commands().filter((c) => OPEN_STATUSES.has(c.status));
  }

  /** Waits until every stack command is final (acked by its site or recorded expired/superseded/cancelled). */
  async quiesce(timeoutMs = 60_000): Promise<void> {
    await waitFor(() => this.open().length === 0, {
      timeoutMs,
      intervalMs: 250,
      message: `every command final (open: ${JSON.stringify(this.safeOpen().slice(0, 10))})`,
    });
  }

  private safeOpen(): CommandRow[] {
    try {
      return this.open();
    } catch {
      return [];
    }
  }

  /** The ledger check (I1, I2, I3) over every site. */
  ledger(): LedgerReport {
    return checkLedger({
      commands: this.commands(),
      created: this.created,
      sites: [...this.agents.values()].map((a) => ({ site: a.site, effectLog: a.effectLog })),
    });
  }

  // ---- MQTT as the test's own identities (admin certificate) ---------------------------------------

  adminClient(opts: IClientOptions = {}): Promise<MqttClient> {
    return this.mqtt.adminClient(opts);
  }

  retainedStatus(site: string): Promise<Json> {
    return this.mqtt.retainedStatus(site);
  }

  statusWatch(): Promise<StatusWatch> {
    return this.mqtt.statusWatch();
  }

  endClient(c: MqttClient): Promise<void> {
    return this.mqtt.end(c);
  }

  // ---- lifecycle ----------------------------------------------------------------------------------

  /** SIGKILLs every child, closes proxies and clients; removes the folder unless `keep`. */
  async close(opts: { keep?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.mqtt.closeAll();
    const procs = [this.controller, this.broker, ...[...this.agents.values()].map((a) => a.proc)];
    await Promise.all(
      procs.map(async (p) => {
        if (p && !p.exitInfo) await p.kill('SIGKILL', { timeoutMs: 5_000 }).catch(() => undefined);
      }),
    );
    for (const a of this.agents.values()) await a.proxy.close();
    const keep = opts.keep || process.env['OUTPOST_FAULTS_KEEP'] === '1';
    if (keep) process.stderr.write(`fault system kept in ${this.dir}\n`);
    else if (!this.opts.dir) rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

function makeDir(): string {
  const root = process.env['OUTPOST_FAULTS_DIR'] || process.env['OUTPOST_TEST_TMP'] || tmpdir();
  const dir = join(root, `faults-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export type { CommandRow } from './controller-db.js';
export type { StatusWatch } from './mqtt.js';

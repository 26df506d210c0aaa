/**
 * `npm run bench -- --only wire`: bytes on the wire per site (DESIGN §7): TCP payload counted at the
 * fault proxy (test/helpers/fault-proxy.ts) between ONE real agent (`createAgent`, TLS 1.3 with its
 * site certificate, MemoryRuntime standing in for Docker — the reference stack's images are fake
 * digests) and the durable `outpost broker` (createBroker, TLS listener, ACL). The controller
 * (`buildController`, in-process, API driven with inject) deploys the committed reference Compose
 * file (test/fixtures/stacks/reference-3svc.compose.yml) through the REST API.
 *
 * Windows are separated by waiting for quiet on the proxy; the command alone is isolated by giving
 * the link 250 ms of one-way latency and reading the downlink counter the moment the agent has
 * journalled the command (the PUBACKs of its replies are still on their way). A tap on the agent's
 * MQTT client lists the MQTT packets of each window (exact MQTT frame sizes); TLS adds a 22-byte
 * record header and tag per record. Also measured: a state snapshot (state.request), the controller's
 * signed heartbeat to an idle site, a keepalive ping, the reconnect after N superseded revisions (I4),
 * and the same command as gzip'd JSON over HTTPS polling (wire-https.ts).
 *
 * Idle per day is extrapolated at the shipped defaults, read from the agent's and the controller's
 * configuration schemas (keepalive, heartbeat interval; the run fails if agent and controller disagree):
 * keepalive exchanges × 86,400 / keepalive plus heartbeat exchanges × 86,400 / interval. A heartbeat
 * exchange resets MQTT.js's ping timer, so counting every keepalive slot as a ping errs high.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { type Agent, createAgent } from '../../agent/src/agent.js';
import { parseConfig } from '../../agent/src/config.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { createBroker } from '../../broker/src/broker.js';
import { specJson } from '../../controller/src/api/stacks.js';
import { buildController, type Controller } from '../../controller/src/app.js';
import { loadConfig } from '../../controller/src/config.js';
import { COMMAND_LIMITS, type Command, decode, decodeSpec, parseSign1 } from '../../protocol/src/index.js';
import { createFaultProxy, type FaultProxy } from '../../test/helpers/fault-proxy.js';
import { makePki } from '../sim/pki.js';
import { referenceCompose } from '../sim/world.js';
import { type BenchOptions, median, type Row, type Section } from './types.js';
import { measurePolling, type PollBytes, type PollTls, startPollServer } from './wire-https.js';

const SITE = 'wire-site';
const TOKEN = 'wire-bench-admin-token-0123456789abcdef';
const DAY = 86_400;
const TLS_RECORD = 22; // TLS 1.3: 5-byte record header + 1 content-type byte + 16-byte AEAD tag
/** The shipped defaults the idle day is extrapolated at (agent/src/config.ts, controller/src/config.ts). */
const AGENT_DEFAULTS = parseConfig({ site: SITE });
const KEEPALIVE_DEFAULT = AGENT_DEFAULTS.keepaliveSec;
const HEARTBEAT_DEFAULT = loadConfig({ env: {} }).outbox.heartbeatSec;
if (HEARTBEAT_DEFAULT !== AGENT_DEFAULTS.heartbeatIntervalSec) {
  throw new Error(
    `wire bench: controller heartbeatSec ${HEARTBEAT_DEFAULT} ≠ agent heartbeatIntervalSec ${AGENT_DEFAULTS.heartbeatIntervalSec}`,
  );
}

const log = (line: string): void => void process.stderr.write(`  wire: ${line}\n`);
const silent = pino({ level: 'silent' });

// ---- MQTT packet tap ------------------------------------------------------------------------------

type Kind = 'cmd' | 'ack' | 'state' | 'status' | 'puback' | 'ping' | 'other';

interface Packet {
  readonly at: number;
  readonly dir: 'up' | 'down';
  readonly kind: Kind;
  /** MQTT frame size (fixed header + variable header + payload). */
  readonly mqtt: number;
  readonly payload: number;
}

const varintLen = (n: number): number => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4);

function sizeOf(p: mqtt.Packet): { kind: Kind; mqtt: number; payload: number } {
  if (p.cmd === 'publish') {
    const payload = typeof p.payload === 'string' ? Buffer.byteLength(p.payload) : p.payload.length;
    const rem = 2 + Buffer.byteLength(p.topic) + (p.qos ? 2 : 0) + payload;
    const kind: Kind = p.topic.endsWith('/cmd')
      ? 'cmd'
      : p.topic.endsWith('/ack')
        ? 'ack'
        : p.topic.endsWith('/state')
          ? 'state'
          : p.topic.endsWith('/status')
            ? 'status'
            : 'other';
    return { kind, mqtt: 1 + varintLen(rem) + rem, payload };
  }
  if (p.cmd === 'puback') return { kind: 'puback', mqtt: 4, payload: 0 };
  if (p.cmd === 'pingreq' || p.cmd === 'pingresp') return { kind: 'ping', mqtt: 2, payload: 0 };
  const len = (p as { length?: number }).length;
  return { kind: 'other', mqtt: len === undefined ? 0 : 1 + varintLen(len) + len, payload: 0 };
}

class Tap {
  readonly packets: Packet[] = [];
  attach(c: MqttClient): void {
    c.on('packetsend', (p) => this.packets.push({ at: performance.now(), dir: 'up', ...sizeOf(p) }));
    c.on('packetreceive', (p) => this.packets.push({ at: performance.now(), dir: 'down', ...sizeOf(p) }));
  }
  since(t: number): Packet[] {
    return this.packets.filter((p) => p.at >= t);
  }
  count(kind: Kind, dir: 'up' | 'down', since: number): number {
    return this.since(since).filter((p) => p.kind === kind && p.dir === dir).length;
  }
}

// ---- helpers --------------------------------------------------------------------------------------

interface Bytes {
  up: number;
  down: number;
}
const snap = (p: FaultProxy): Bytes => ({ ...p.bytes });
const diff = (a: Bytes, b: Bytes): Bytes => ({ up: b.up - a.up, down: b.down - a.down });

async function until(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 60_000, stepMs = 5) {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`wire bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Waits until the proxy has seen no byte for `ms`. */
async function quiet(p: FaultProxy, ms = 1500): Promise<void> {
  let last = -1;
  let since = performance.now();
  const end = since + 120_000;
  while (performance.now() < end) {
    const b = p.bytes.up + p.bytes.down;
    if (b !== last) {
      last = b;
      since = performance.now();
    } else if (performance.now() - since >= ms) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The JSON a JSON-over-HTTPS system would send for the same command (detached Ed25519 signature). */
function commandAsJson(envelope: Uint8Array): unknown {
  const parts = parseSign1(envelope, COMMAND_LIMITS);
  const cmd = decode(parts.payload, COMMAND_LIMITS) as Command;
  if (cmd.type !== 'stack.apply') throw new Error('expected a stack.apply');
  return {
    v: cmd.v,
    site: cmd.site,
    seq: cmd.seq,
    prev: cmd.prev,
    id: Buffer.from(cmd.id).toString('hex'),
    iat: cmd.iat,
    exp: cmd.exp,
    type: cmd.type,
    body: {
      stack: cmd.body.stack,
      rev: cmd.body.rev,
      spec: specJson(decodeSpec(cmd.body.spec, cmd.body.z === true)),
    },
    kid: parts.kid,
    sig: Buffer.from(parts.signature).toString('base64'),
  };
}

// ---- the setup ------------------------------------------------------------------------------------

interface Setup {
  readonly root: string;
  readonly controller: Controller;
  readonly proxy: FaultProxy;
  readonly tap: Tap;
  readonly tls: PollTls;
  agent: Agent | undefined;
  /** Controller clock offset (ms): moved forward to make the next heartbeat due. */
  offsetMs: number;
  startAgent(over?: Record<string, unknown>): Promise<Agent>;
  stopAgent(): Promise<void>;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of our own API
  api(method: string, url: string, body?: unknown): Promise<{ status: number; json: any }>;
  close(): Promise<void>;
}

async function setup(): Promise<Setup> {
  const root = mkdtempSync(join(tmpdir(), 'outpost-bench-wire-'));
  const pki = await makePki(root);
  await pki.issueSite(SITE);
  const l = pki.layout;
  const broker = createBroker({
    log: silent,
    config: {
      dataDir: join(root, 'broker'),
      certsDir: pki.dir,
      tls: { enabled: true, host: '127.0.0.1', port: 0, watchCrlMs: 0 },
      plain: { enabled: false },
      metrics: { enabled: false },
    },
  });
  const ports = await broker.start();
  const config = loadConfig({
    overrides: {
      dataDir: join(root, 'controller'),
      certsDir: pki.dir,
      adminToken: TOKEN,
      logLevel: 'silent',
      api: { port: 0 },
      mqtt: { url: `mqtts://localhost:${ports.tlsPort}` },
      signing: { kid: pki.controllerKid },
    },
  });
  const s: Setup = {
    root,
    controller: undefined as unknown as Controller,
    proxy: await createFaultProxy({ targetPort: ports.tlsPort! }),
    tap: new Tap(),
    tls: {
      ca: readFileSync(l.caCert),
      serverCert: readFileSync(l.brokerCert),
      serverKey: readFileSync(l.brokerKey),
      clientCert: readFileSync(l.siteCert(SITE)),
      clientKey: readFileSync(l.siteKey(SITE)),
    },
    agent: undefined,
    offsetMs: 0,
    async startAgent(over = {}) {
      const agent = createAgent({
        config: parseConfig({
          site: SITE,
          broker: `mqtts://localhost:${s.proxy.port}`,
          certsDir: pki.dir,
          dataDir: join(root, 'agent'),
          ...over,
        }),
        runtime: new MemoryRuntime({ reconcileIntervalMs: 30_000 }),
        log: silent,
        diskFree: () => 1e12,
        mqtt: (url, opts) => {
          const c = mqtt.connect(url, opts);
          s.tap.attach(c);
          return c;
        },
      });
      await agent.start();
      s.agent = agent;
      await until(() => agent.status().connected, 'the agent to connect');
      return agent;
    },
    async stopAgent() {
      await s.agent?.close();
      s.agent = undefined;
    },
    async api(method, url, body) {
      const r = await s.controller.app.inject({
        method: method as 'GET',
        url,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        ...(body ? { payload: JSON.stringify(body) } : {}),
      });
      return { status: r.statusCode, json: r.body ? JSON.parse(r.body) : undefined };
    },
    async close() {
      await s.stopAgent().catch(() => undefined);
      await s.controller?.close().catch(() => undefined);
      await s.proxy.close();
      await broker.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
  try {
    (s as { controller: Controller }).controller = await buildController({
      config,
      log: silent,
      now: () => Date.now() + s.offsetMs,
    });
    await s.controller.start({ listen: false });
    const enrol = await s.api('POST', '/v1/sites', {
      id: SITE,
      uplinkKey: readFileSync(l.siteUplinkPub(SITE), 'utf8'),
    });
    if (enrol.status !== 201) throw new Error(`enrol: ${enrol.status} ${JSON.stringify(enrol.json)}`);
  } catch (err) {
    await s.close();
    throw err;
  }
  return s;
}

const cmdStatus = (s: Setup, seq: number): string | undefined =>
  s.controller.store.commands.summary(SITE, seq)?.status;

let variant = 0;

/** Pushes a new revision of the reference stack and deploys it to the site; returns its seq. */
async function deploy(s: Setup): Promise<{ seq: number; rev: number }> {
  const push = await s.api('POST', '/v1/stacks/ref/revisions', { compose: referenceCompose(++variant) });
  if (push.status !== 201) throw new Error(`push: ${push.status} ${JSON.stringify(push.json)}`);
  const rev = push.json.revision.rev as number;
  const d = await s.api('POST', '/v1/deployments', { stack: 'ref', rev, target: { sites: [SITE] } });
  if (d.status !== 201) throw new Error(`deploy: ${d.status} ${JSON.stringify(d.json)}`);
  return { seq: d.json.commands[0].seq as number, rev };
}

// ---- measurements ---------------------------------------------------------------------------------

interface ApplyRun {
  /** TCP payload of the stack.apply command alone (downlink). */
  readonly command: number;
  readonly commandMqtt: number;
  readonly envelope: number;
  /** The whole exchange, deploy → quiet after `applied`, state delta and status. */
  readonly exchange: Bytes;
  /** MQTT frames of the agent's replies, by kind. */
  readonly ackMqtt: number[];
  readonly deltaMqtt: number[];
  readonly statusMqtt: number[];
  /** Sum of (MQTT frame + one TLS record) over every packet of the exchange. */
  readonly estimated: number;
  readonly envelopeBytes: Uint8Array;
}

async function measureApply(s: Setup): Promise<ApplyRun> {
  const agent = s.agent!;
  await quiet(s.proxy);
  s.proxy.delay(250);
  const t0 = performance.now();
  const b0 = snap(s.proxy);
  const { seq } = await deploy(s);
  await until(() => agent.status().contig >= seq, 'the command to be journalled', 60_000, 1);
  const b1 = snap(s.proxy);
  s.proxy.delay(0);
  await until(() => cmdStatus(s, seq) === 'applied', 'the applied ack', 60_000, 20);
  // The state delta and the status follow the applied ack (each throttled to one per 5 s).
  await until(
    () => s.tap.count('state', 'up', t0) >= 1 && s.tap.count('status', 'up', t0) >= 1,
    'state and status',
    30_000,
    20,
  );
  await quiet(s.proxy);
  const b2 = snap(s.proxy);
  const pk = s.tap.since(t0);
  const cmd = pk.find((p) => p.kind === 'cmd' && p.dir === 'down');
  const envelope = s.controller.store.commands.get(SITE, seq)?.envelope;
  if (!cmd || !envelope) throw new Error('wire bench: the command was not seen');
  const up = (k: Kind) => pk.filter((p) => p.dir === 'up' && p.kind === k).map((p) => p.mqtt);
  return {
    command: b1.down - b0.down,
    commandMqtt: cmd.mqtt,
    envelope: envelope.length,
    envelopeBytes: new Uint8Array(envelope),
    exchange: diff(b0, b2),
    ackMqtt: up('ack'),
    deltaMqtt: up('state'),
    statusMqtt: up('status'),
    estimated: pk.reduce((a, p) => a + p.mqtt + TLS_RECORD, 0),
  };
}

interface Exchange {
  readonly bytes: Bytes;
  readonly packets: Packet[];
}

async function measureSnapshot(s: Setup): Promise<Exchange & { stateMqtt: number }> {
  await quiet(s.proxy);
  const t0 = performance.now();
  const b0 = snap(s.proxy);
  const states = s.controller.ingest.stats().states;
  const r = await s.api('POST', `/v1/sites/${SITE}/commands`, { type: 'state.request', full: true });
  if (r.status !== 201) throw new Error(`state.request: ${r.status}`);
  await until(() => s.controller.ingest.stats().states > states, 'the state snapshot', 60_000, 20);
  await quiet(s.proxy);
  const packets = s.tap.since(t0);
  const st = packets.filter((p) => p.kind === 'state' && p.dir === 'up').map((p) => p.mqtt);
  return { bytes: diff(b0, snap(s.proxy)), packets, stateMqtt: Math.max(...st) };
}

async function measureHeartbeat(s: Setup): Promise<Exchange> {
  await quiet(s.proxy);
  const t0 = performance.now();
  const b0 = snap(s.proxy);
  const before = s.controller.publisher.snapshot()['heartbeats'] ?? 0;
  s.offsetMs += (HEARTBEAT_DEFAULT + 60) * 1000;
  s.controller.publisher.tick();
  await until(
    () => (s.controller.publisher.snapshot()['heartbeats'] ?? 0) > before,
    'a heartbeat',
    30_000,
    20,
  );
  await until(() => s.tap.count('cmd', 'down', t0) >= 1, 'the heartbeat delivery', 30_000, 20);
  // Quiet for longer than the agent's state/status throttle, so a report the heartbeat caused is counted.
  await quiet(s.proxy, AGENT_DEFAULTS.stateMinIntervalMs + 1500);
  return { bytes: diff(b0, snap(s.proxy)), packets: s.tap.since(t0) };
}

/**
 * One keepalive exchange: the bytes between two consecutive PINGRESPs reaching the agent (one PINGREQ
 * up, one PINGRESP down), at keepalive 10 s; intervals with any other packet in them are skipped.
 */
async function measurePing(s: Setup, intervals: number): Promise<number> {
  await s.stopAgent();
  await s.startAgent({ keepaliveSec: 10 });
  const marks: { at: number; bytes: number }[] = [];
  const client = s.tap;
  const t0 = performance.now();
  const before = client.packets.length;
  const timer = setInterval(() => {
    const pings = client.packets.slice(before).filter((p) => p.kind === 'ping' && p.dir === 'down');
    if (pings.length > marks.length)
      marks.push({ at: performance.now(), bytes: s.proxy.bytes.up + s.proxy.bytes.down });
  }, 1);
  try {
    await until(() => marks.length >= intervals + 3, 'keepalive pings', 15_000 * (intervals + 3), 100);
  } finally {
    clearInterval(timer);
  }
  const per: number[] = [];
  for (let i = 1; i < marks.length; i++) {
    const a = marks[i - 1]!;
    const b = marks[i]!;
    const between = client.packets.filter((p) => p.at > a.at && p.at <= b.at);
    if (between.every((p) => p.kind === 'ping')) per.push(b.bytes - a.bytes);
  }
  if (per.length === 0) throw new Error('wire bench: no clean keepalive interval');
  log(`keepalive intervals measured: ${per.join(', ')} B (${Math.round(performance.now() - t0)} ms)`);
  return median(per);
}

interface Reconnect {
  readonly n: number;
  readonly bytes: Bytes;
  readonly commands: number;
}

/** Agent offline; N revisions deployed meanwhile; bytes from its restart to the newest applied + quiet. */
async function measureReconnect(s: Setup, n: number): Promise<Reconnect> {
  await s.stopAgent();
  await quiet(s.proxy, 500);
  let last: { seq: number } | undefined;
  for (let i = 0; i < n; i++) last = await deploy(s);
  // Let the publisher put what it will at the broker (at most its per-site window).
  await new Promise((r) => setTimeout(r, 1500));
  const t0 = performance.now();
  const b0 = snap(s.proxy);
  await s.startAgent();
  if (last) {
    const seq = last.seq;
    await until(() => cmdStatus(s, seq) === 'applied', 'the newest revision applied', 120_000, 20);
  }
  await quiet(s.proxy, 2000);
  return { n, bytes: diff(b0, snap(s.proxy)), commands: s.tap.count('cmd', 'down', t0) };
}

// ---- the section ----------------------------------------------------------------------------------

const sumUp = (x: Exchange): number => x.bytes.up + x.bytes.down;

export async function run(opts: BenchOptions): Promise<Section> {
  const s = await setup();
  try {
    // Connect: TLS handshake with client certificates, CONNECT/SUBSCRIBE, status, full state.
    const c0 = snap(s.proxy);
    await s.startAgent();
    await quiet(s.proxy, 2000);
    const connect = diff(c0, snap(s.proxy));
    log(`connect ${connect.up} up / ${connect.down} down`);

    const applies: ApplyRun[] = [];
    for (let r = 0; r < opts.runs; r++) {
      // Past the agent's 5 s state/status throttle, as a real deployment would be.
      await new Promise((res) => setTimeout(res, 5200));
      applies.push(await measureApply(s));
      log(`stack.apply ${applies.at(-1)!.command} bytes`);
    }
    const snaps: Awaited<ReturnType<typeof measureSnapshot>>[] = [];
    const beats: Exchange[] = [];
    for (let r = 0; r < (opts.full ? opts.runs : 1); r++) {
      await new Promise((res) => setTimeout(res, 5200));
      snaps.push(await measureSnapshot(s));
      await new Promise((res) => setTimeout(res, 5200));
      beats.push(await measureHeartbeat(s));
      log(`snapshot ${sumUp(snaps.at(-1)!)} / heartbeat ${sumUp(beats.at(-1)!)} bytes`);
    }
    const reconnects: Reconnect[] = [];
    for (const n of [0, 1, 10, 100]) {
      reconnects.push(await measureReconnect(s, n));
      log(
        `reconnect after ${n}: ${reconnects.at(-1)!.bytes.down} down, ${reconnects.at(-1)!.commands} commands`,
      );
    }
    // HTTPS polling with the same command as gzip'd JSON, while the MQTT link sits idle for the pings.
    const json = commandAsJson(applies[0]!.envelopeBytes);
    const server = await startPollServer(s.tls, SITE);
    const pollProxy = await createFaultProxy({ targetPort: server.port });
    let keep: PollBytes;
    let fresh: PollBytes;
    const pinging = measurePing(s, 2);
    pinging.catch(() => undefined);
    try {
      keep = await measurePolling(s.tls, server, pollProxy, SITE, true, json, 5);
      fresh = await measurePolling(s.tls, server, pollProxy, SITE, false, json, 5);
    } finally {
      await pollProxy.close();
      await server.close();
    }
    const ping = await pinging;
    log(
      `keepalive exchange ${ping} B; HTTPS idle poll ${keep.idlePoll} B (keep-alive), ${fresh.idlePoll} B (new connection)`,
    );
    let idleWindow: { seconds: number; bytes: number } | undefined;
    if (opts.full) {
      await s.stopAgent();
      await s.startAgent();
      await quiet(s.proxy, 2000);
      const seconds = KEEPALIVE_DEFAULT + 15;
      const b0 = snap(s.proxy);
      await new Promise((res) => setTimeout(res, seconds * 1000));
      const d = diff(b0, snap(s.proxy));
      idleWindow = { seconds, bytes: d.up + d.down };
      log(`idle ${seconds} s at keepalive ${KEEPALIVE_DEFAULT}: ${idleWindow.bytes} bytes`);
    }

    const m = (xs: number[]) => median(xs);
    const command = m(applies.map((a) => a.command));
    const ackAccepted = m(applies.map((a) => a.ackMqtt[0] ?? Number.NaN));
    const ackApplied = m(applies.map((a) => a.ackMqtt[1] ?? Number.NaN));
    const delta = m(applies.map((a) => a.deltaMqtt[0] ?? Number.NaN));
    const status = m(applies.map((a) => a.statusMqtt[0] ?? Number.NaN));
    const snapshot = m(snaps.map((x) => x.stateMqtt));
    const heartbeat = m(beats.map(sumUp));
    const beatPk = (k: Kind, dir: 'up' | 'down') =>
      m(
        beats.map((b) =>
          b.packets.filter((p) => p.kind === k && p.dir === dir).reduce((a, p) => a + p.mqtt, 0),
        ),
      );
    const beatCount = (k: Kind) =>
      m(beats.map((b) => b.packets.filter((p) => p.kind === k && p.dir === 'up').length));
    const exchangeUp = m(applies.map((a) => a.exchange.up));
    const exchangeDown = m(applies.map((a) => a.exchange.down));
    const estimated = m(applies.map((a) => a.estimated));
    const pingsPerDay = DAY / KEEPALIVE_DEFAULT;
    const beatsPerDay = DAY / HEARTBEAT_DEFAULT;
    const idleDay = pingsPerDay * ping + beatsPerDay * heartbeat;
    const rec = (n: number) => reconnects.find((r) => r.n === n)!;
    const recDown = (n: number) => rec(n).bytes.down;
    // I4: past the controller's per-site window, more revisions while offline cost nothing more.
    const i4ok = recDown(100) <= recDown(10) * 1.05;
    const poll = (p: PollBytes, every: number) => (DAY / every) * p.idlePoll;
    const a0 = applies[0]!;
    const rows: Row[] = [
      {
        name: 'stack.apply of the reference 3-service stack, on the wire (downlink TCP payload, TLS 1.3)',
        value: command,
        unit: 'B',
        target: '≤ 700',
        ok: command <= 700,
      },
      { name: '… its MQTT PUBLISH frame', value: m(applies.map((a) => a.commandMqtt)), unit: 'B' },
      { name: '… its COSE_Sign1 envelope', value: m(applies.map((a) => a.envelope)), unit: 'B' },
      { name: 'ack `accepted`, MQTT frame (+ 22 B TLS record on the wire)', value: ackAccepted, unit: 'B' },
      { name: 'ack `applied`, MQTT frame (+ 22 B TLS record)', value: ackApplied, unit: 'B' },
      { name: 'state delta after the apply, MQTT frame (+ 22 B)', value: delta, unit: 'B' },
      { name: 'retained status JSON after the apply, MQTT frame (+ 22 B)', value: status, unit: 'B' },
      {
        name: 'state snapshot (full, 1 stack of 3 services), MQTT frame (+ 22 B)',
        value: snapshot,
        unit: 'B',
      },
      {
        name: 'whole stack.apply exchange, deploy → applied + state + status, uplink',
        value: exchangeUp,
        unit: 'B',
        note: `${a0.ackMqtt.length} acks, ${a0.deltaMqtt.length} state, ${a0.statusMqtt.length} status, PUBACKs`,
      },
      { name: 'whole stack.apply exchange, downlink', value: exchangeDown, unit: 'B' },
      {
        name: 'whole exchange measured / Σ(MQTT frame + 22 B) over its packets',
        value: (100 * (exchangeUp + exchangeDown)) / estimated,
        unit: '%',
      },
      {
        name: 'state.request → snapshot exchange, both directions',
        value: m(snaps.map(sumUp)),
        unit: 'B',
      },
      {
        name: 'connect (TLS handshake with client certs, CONNECT, SUBSCRIBE, status, full state)',
        value: connect.up + connect.down,
        unit: 'B',
      },
      { name: 'keepalive exchange (PINGREQ + PINGRESP)', value: ping, unit: 'B' },
      {
        name: 'controller heartbeat exchange to an idle site (signed heartbeat, its ack, PUBACKs, any state or status it causes)',
        value: heartbeat,
        unit: 'B',
        note: `${beatCount('ack')} ack, ${beatCount('state')} state, ${beatCount('status')} status messages`,
      },
      {
        name: '… heartbeat command / its ack / state / status, MQTT frames (each + 22 B)',
        value: beatPk('cmd', 'down'),
        unit: 'B',
        note: `${beatPk('ack', 'up')} / ${beatPk('state', 'up')} / ${beatPk('status', 'up')} B`,
      },
      {
        name: `idle site, per day (${pingsPerDay} pings at keepalive ${KEEPALIVE_DEFAULT} s + ${beatsPerDay} heartbeats at ${HEARTBEAT_DEFAULT} s; extrapolated)`,
        value: idleDay / 1000,
        unit: 'KB',
        target: '≤ 20 KB (1 KB = 1000 B)',
        ok: idleDay <= 20_000,
      },
      {
        name: '… of which keepalive pings',
        value: (pingsPerDay * ping) / 1000,
        unit: 'KB',
      },
      {
        name: '… of which heartbeats',
        value: (beatsPerDay * heartbeat) / 1000,
        unit: 'KB',
      },
      ...(idleWindow
        ? [
            {
              name: `idle window measured at keepalive ${KEEPALIVE_DEFAULT} s, ${idleWindow.seconds} s (no heartbeat due), scaled to a day`,
              value: (idleWindow.bytes * DAY) / idleWindow.seconds / 1000,
              unit: 'KB',
            },
          ]
        : []),
      ...[0, 1, 10, 100].map(
        (n): Row => ({
          name: `reconnect after ${n} superseded revision${n === 1 ? '' : 's'} pushed while offline: bytes received`,
          value: recDown(n),
          unit: 'B',
          note: `${rec(n).commands} command deliveries; uplink ${rec(n).bytes.up} B`,
          ...(n === 100 ? { target: 'no growth with N: ≤ N = 10 + 5 % (I4)', ok: i4ok } : {}),
        }),
      ),
      {
        name: "same command as JSON, gzip'd (HTTP body)",
        value: keep.gzipBytes,
        unit: 'B',
        note: `${keep.jsonBytes} B of JSON`,
      },
      { name: 'HTTPS poll carrying the command (keep-alive connection)', value: keep.commandPoll, unit: 'B' },
      { name: 'HTTPS idle poll, 304 (keep-alive connection)', value: keep.idlePoll, unit: 'B' },
      {
        name: 'HTTPS idle poll, 304 (new TLS connection, session resumed)',
        value: fresh.idlePoll,
        unit: 'B',
      },
      {
        name: 'HTTPS first poll (full TLS handshake with client certificate)',
        value: keep.firstPoll,
        unit: 'B',
      },
      {
        name: 'HTTPS polling every 5 s, idle, per day (keep-alive)',
        value: poll(keep, 5) / 1000,
        unit: 'KB',
      },
      {
        name: 'HTTPS polling every 60 s, idle, per day (keep-alive)',
        value: poll(keep, 60) / 1000,
        unit: 'KB',
      },
      {
        name: 'HTTPS polling every 5 s, idle, per day (new connection per poll)',
        value: poll(fresh, 5) / 1000,
        unit: 'KB',
      },
      {
        name: 'HTTPS polling every 60 s, idle, per day (new connection per poll)',
        value: poll(fresh, 60) / 1000,
        unit: 'KB',
      },
      {
        name: 'HTTPS 60 s polling idle per day / MQTT idle per day (keep-alive)',
        value: poll(keep, 60) / idleDay,
        unit: '×',
      },
    ];
    return {
      title: 'Bytes on the wire per site (TLS 1.3)',
      method: [
        'TCP payload counted at the fault proxy (test/helpers/fault-proxy.ts) between one real agent (`createAgent`,',
        'TLS 1.3 with its site certificate from `outpost certs`, MemoryRuntime in place of Docker: the reference',
        "stack's images are fake digests) and the durable `outpost broker` (TLS listener, ACL). The controller",
        '(`buildController`) deploys test/fixtures/stacks/reference-3svc.compose.yml through the REST API',
        '(a new revision each run). The command is isolated by giving the link 250 ms of latency and reading the',
        'downlink counter the moment the agent has journalled it; other messages are MQTT frame sizes from a tap',
        "on the agent's MQTT client (each costs one TLS record, 22 B more, on the wire) and whole exchanges",
        'measured at the proxy until quiet. Idle per day is extrapolated, not measured for a day: keepalive',
        `exchanges (bytes between consecutive PINGRESPs at keepalive 10 s, median) × ${pingsPerDay}/day at the default ${KEEPALIVE_DEFAULT} s, plus the`,
        `controller's signed heartbeat exchange (made due by moving the controller's clock) × ${beatsPerDay}/day.`,
        'Reconnect: the agent stops cleanly, N revisions are deployed, the agent restarts; bytes received from',
        'its restart (TLS handshake included) until the newest revision is applied and the link is quiet.',
        'HTTPS polling: a minimal node:https server (TLS 1.3, client certificate required) and client on',
        'loopback through a second fault proxy; idle polls send If-None-Match and get 304; the command poll gets',
        "the same command as gzip'd JSON (spec in JSON, detached Ed25519 signature). Polls are made back to",
        'back; per-day figures multiply one idle poll by 86,400 / interval.',
        `Median of ${opts.runs} runs (reconnects and HTTPS: one run).`,
      ].join(' '),
      rows,
    };
  } finally {
    await s.close();
  }
}

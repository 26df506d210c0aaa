/**
 * SimAgent: a light simulated site for fleets of thousands in one process. It speaks the real
 * protocol with the product's own pieces — `openCommand` (structure, key, signature, schema, site,
 * expiry by trusted time), `decodeSpec` and the runtime's `validateTarget` policy, a MemoryRuntime
 * that applies the stack, `encodeAck`/`encodeState` signed with the site's uplink key, and the agent's
 * own `buildSiteStatus` JSON for the retained status and the last will — over its own MQTT 3.1.1
 * connection (client id = site id, clean=false, QoS 1, PUBACK of a command only after it is
 * journalled, reconnect with the agent's backoff).
 *
 * What differs from the real agent (agent/src/agent.ts), on purpose, to fit 10,000 sites in a few
 * processes: the journal, uplink outbox and watermarks live in memory (no SQLite, so nothing survives
 * a restart of the simulator and no fsync is paid); no control-plane monitor, disk guard, reconciler
 * timer or alarms; a seq gap is held without the gap timer; every rejection carries only `ref`
 * (the agent journals an authentic expired command and acks it with seq/id); `trust.update` is
 * rejected (`policy`), heartbeats and `state.request` are acked `applied`; unacknowledged uplink
 * messages are kept by MQTT.js's in-memory store instead of the SQLite outbox. Ordering, dedupe and
 * supersede follow [ORD-1]..[ORD-5]: `prev` chain, duplicate envelopes re-acked with their recorded
 * status, seen seq/id or seq ≤ watermark rejected `replay`, a newer revision supersedes an older
 * pending one of the same stack after the settle time.
 */
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { buildSiteStatus, encodeStatus } from '../../agent/src/core/status.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { DEFAULT_POLICY, validateTarget } from '../../agent/src/runtime/policy.js';
import type { DesiredStack } from '../../agent/src/runtime/types.js';
import { AGENT_VERSION } from '../../agent/src/version.js';
import { certsLayout } from '../../certs/src/layout.js';
import {
  type Ack,
  type Command,
  decodeSpec,
  encodeAck,
  encodeState,
  envelopeRef,
  isProtocolError,
  openCommand,
  openTrustRoot,
  PROTOCOL_VERSION,
  type ReasonCode,
  type Signer,
  type StackState,
  sha256,
  Topics,
  TrustedTime,
  TrustStore,
  toHex,
} from '../../protocol/src/index.js';
import { uplinkSigner } from './keys.js';

const MAX_ENVELOPE = 256 * 1024;
const STACK_TYPES = new Set(['stack.apply', 'stack.remove', 'stack.restart']);

export interface SimAgentOptions {
  readonly site: string;
  readonly url: string;
  /** `outpost certs` folder holding the provisioned trust root, or the trust store itself. */
  readonly certsDir?: string;
  readonly trust?: TrustStore;
  readonly signer?: Signer;
  readonly topicPrefix?: string;
  readonly keepaliveSec?: number;
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  readonly connectTimeoutMs?: number;
  /** Quiet time after the last command before stack commands run (agent default 250 ms). */
  readonly settleMs?: number;
  /** Minimum interval between state deltas and between status updates (agent default 5 s). */
  readonly stateMinIntervalMs?: number;
  /** Extra MQTT options (e.g. a `username` for a broker that needs one). */
  readonly mqtt?: Partial<IClientOptions>;
  /** Sees the MQTT client once it exists (counters, sessionPresent). */
  readonly onClient?: (c: MqttClient) => void;
}

interface Entry {
  readonly seq: number;
  readonly prev: number;
  readonly id: string;
  readonly type: Command['type'];
  readonly ref: string;
  readonly cmd: Command;
  /** The decoded stack spec of a stack.apply (decoded once, at intake). */
  spec?: ReturnType<typeof decodeSpec>;
  status: 'received' | 'executing' | 'done' | 'failed' | 'rejected' | 'superseded';
  ack: Ack['st'];
  rc?: ReasonCode;
  msg?: string;
  readonly stack?: string;
  readonly rev?: number;
}

const trustCache = new Map<string, TrustStore>();

function trustFrom(certsDir: string): TrustStore {
  let t = trustCache.get(certsDir);
  if (!t) {
    t = new TrustStore(openTrustRoot(new Uint8Array(readFileSync(certsLayout(certsDir).trustRoot))));
    trustCache.set(certsDir, t);
  }
  return t;
}

export class SimAgent {
  readonly site: string;
  readonly runtime = new MemoryRuntime();
  private readonly topics: Topics;
  private readonly trust: TrustStore;
  private readonly signer: Signer;
  private readonly time = new TrustedTime();
  private readonly journal = new Map<number, Entry>();
  private readonly ids = new Set<string>();
  private readonly desired = new Map<string, DesiredStack>();
  private contig = 0;
  private applied = 0;
  private useq = 0;
  private client: MqttClient | undefined;
  private subscribed = false;
  private closing = false;
  private attempt = 0;
  private lastIntakeAt = Number.NEGATIVE_INFINITY;
  private running: Promise<void> | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  private lastStateAt = Number.NEGATIVE_INFINITY;
  private stateTimer: NodeJS.Timeout | undefined;
  private lastStatusAt = Number.NEGATIVE_INFINITY;
  private statusTimer: NodeJS.Timeout | undefined;
  private reported = new Map<string, string>();
  private reportedLast = -1;
  private lastView: StackState[] = [];
  /** Counters for tests. */
  readonly counts = { commands: 0, duplicates: 0, rejected: 0, applied: 0, superseded: 0 };

  constructor(private readonly o: SimAgentOptions) {
    this.site = o.site;
    this.topics = new Topics(o.topicPrefix);
    const trust = o.trust ?? (o.certsDir ? trustFrom(o.certsDir) : undefined);
    if (!trust) throw new Error('SimAgent needs a trust store or the certs folder');
    this.trust = trust;
    this.signer = o.signer ?? uplinkSigner(o.site);
    this.time.observe(trust.root.iat);
  }

  get ready(): boolean {
    return this.client?.connected === true && this.subscribed;
  }

  /** Watermarks (as the agent's status reports them). */
  get watermark(): { contig: number; applied: number } {
    return { contig: this.contig, applied: this.applied };
  }

  /** Starts connecting; resolves at once (like the agent, it runs offline until a broker answers). */
  async start(): Promise<void> {
    const o = this.o;
    const options: IClientOptions = {
      clientId: this.site,
      protocolVersion: 4,
      clean: false,
      keepalive: o.keepaliveSec ?? 300,
      connectTimeout: o.connectTimeoutMs ?? 30_000,
      reconnectPeriod: this.nextDelay(),
      resubscribe: false,
      manualConnect: true,
      queueQoSZero: false,
      will: { topic: this.topics.status(this.site), payload: Buffer.from(this.will()), qos: 1, retain: true },
      ...o.mqtt,
    };
    const client = mqtt.connect(o.url, options);
    this.client = client;
    o.onClient?.(client);
    client.handleMessage = (packet, callback) => {
      if (packet.topic === this.topics.cmd(this.site)) {
        const p = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
        this.intake(new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
      }
      callback(); // PUBACK after the (in-memory) journal entry
    };
    client.prependListener('close', () => {
      this.subscribed = false;
      if (client.options.will) client.options.will.payload = Buffer.from(this.will());
      client.options.reconnectPeriod = this.closing ? 0 : this.nextDelay();
    });
    client.on('connect', () => {
      this.attempt = 0;
      client.subscribe(this.topics.cmd(this.site), { qos: 1 }, (err, granted) => {
        if (!err && granted?.[0]?.qos === 1) this.subscribed = true;
      });
      void this.view().then(() => {
        this.publishStatus();
        this.publishState(true);
      });
    });
    client.on('error', () => undefined);
    client.connect();
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const t of [this.settleTimer, this.stateTimer, this.statusTimer]) if (t) clearTimeout(t);
    await this.running?.catch(() => undefined);
    const c = this.client;
    this.client = undefined;
    if (!c) return;
    c.options.reconnectPeriod = 0;
    if (c.connected) {
      const final = encodeStatus({ ...this.status(false), reason: 'shutdown' });
      await timeout(
        c.publishAsync(this.topics.status(this.site), Buffer.from(final), { qos: 1, retain: true }),
        2000,
      );
    }
    await timeout(c.endAsync(), 2000).catch(() => c.endAsync(true));
  }

  /** The site's own view, for diagnosing a site the controller waits for. */
  inspect(): Record<string, unknown> {
    const c = this.client;
    const outgoing = c
      ? Object.keys((c as unknown as { outgoing: Record<string, unknown> }).outgoing ?? {}).length
      : 0;
    return {
      connected: c?.connected ?? false,
      subscribed: this.subscribed,
      contig: this.contig,
      applied: this.applied,
      useq: this.useq,
      running: this.running !== undefined,
      settling: this.settleTimer !== undefined,
      outgoing,
      counts: this.counts,
      journal: [...this.journal.values()].map((e) => [e.seq, e.prev, e.status, e.ack]),
    };
  }

  /** Bounded exponential backoff with jitter (agent/src/core/transport.ts). */
  private nextDelay(): number {
    const min = this.o.reconnectMinMs ?? 1000;
    const max = this.o.reconnectMaxMs ?? 300_000;
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(min, Math.round(base * (0.5 + Math.random() / 2)));
  }

  // ---- intake ([ENV-7], [ORD-4]) ------------------------------------------------------------------

  private intake(bytes: Uint8Array): void {
    this.counts.commands++;
    const ref = toHex(envelopeRef(bytes));
    if (bytes.length > MAX_ENVELOPE) {
      this.reject(ref, 'too-large', `envelope of ${bytes.length} bytes`);
      return;
    }
    let cmd: Command;
    try {
      cmd = openCommand(bytes, { site: this.site, trust: this.trust, nowSec: this.time.nowSec() }).cmd;
    } catch (err) {
      if (!isProtocolError(err)) throw err;
      this.reject(ref, err.code, err.message);
      return;
    }
    const id = toHex(cmd.id);
    const prior = this.journal.get(cmd.seq);
    if (prior && prior.ref === ref) {
      this.counts.duplicates++;
      this.ack(prior, prior.ack, prior.rc, prior.msg);
      return;
    }
    if (prior || this.ids.has(id) || cmd.seq <= this.contig) {
      this.counts.rejected++;
      this.sendAck({ st: 'rejected', seq: cmd.seq, id: cmd.id, type: cmd.type, rc: 'replay', msg: 'replay' });
      return;
    }
    this.time.observe(cmd.iat);
    const stack = 'stack' in cmd.body ? (cmd.body as { stack: string }).stack : undefined;
    const rev = cmd.type === 'stack.apply' ? cmd.body.rev : undefined;
    const e: Entry = {
      seq: cmd.seq,
      prev: cmd.prev,
      id,
      type: cmd.type,
      ref,
      cmd,
      status: 'received',
      ack: 'accepted',
      ...(stack ? { stack } : {}),
      ...(rev ? { rev } : {}),
    };
    this.journal.set(cmd.seq, e);
    this.ids.add(id);
    const refusal = this.vet(e);
    if (refusal) {
      e.status = 'rejected';
      this.counts.rejected++;
      this.ack(e, 'rejected', refusal.rc, refusal.msg);
    } else if (STACK_TYPES.has(cmd.type)) {
      this.ack(e, 'accepted');
    } else {
      e.status = 'done';
      this.ack(e, 'applied');
      if (cmd.type === 'state.request') void this.view().then(() => this.publishState(true));
    }
    this.lastIntakeAt = performance.now();
    this.advance();
  }

  private vet(e: Entry): { rc: ReasonCode; msg: string } | undefined {
    const cmd = e.cmd;
    if (cmd.type === 'trust.update') return { rc: 'policy', msg: 'trust.update is not simulated' };
    if (cmd.type !== 'stack.apply') return undefined;
    try {
      const spec = decodeSpec(cmd.body.spec, cmd.body.z === true);
      e.spec = spec;
      const refusal = validateTarget(
        { name: cmd.body.stack, rev: cmd.body.rev, spec, digest: '', approvedCritical: false },
        DEFAULT_POLICY,
      );
      return refusal ? { rc: refusal.reason, msg: refusal.detail } : undefined;
    } catch (err) {
      if (!isProtocolError(err)) throw err;
      return { rc: err.code, msg: err.message };
    }
  }

  private reject(ref: string, rc: ReasonCode, msg: string): void {
    this.counts.rejected++;
    this.sendAck({ st: 'rejected', ref: Buffer.from(ref, 'hex'), rc, msg });
  }

  // ---- ordering and execution ([ORD-1]..[ORD-5]) -------------------------------------------------

  /** Moves the contiguous watermark along the `prev` chain and schedules execution. */
  private advance(): void {
    for (;;) {
      let next: Entry | undefined;
      for (const e of this.journal.values()) {
        if (e.seq > this.contig && e.prev <= this.contig && (!next || e.seq < next.seq)) next = e;
      }
      if (!next) break;
      this.contig = next.seq;
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.running || this.settleTimer || this.closing) return;
    const wait = this.lastIntakeAt + (this.o.settleMs ?? 250) - performance.now();
    if (wait > 0) {
      this.settleTimer = setTimeout(() => {
        this.settleTimer = undefined;
        this.schedule();
      }, wait);
      return;
    }
    const pending = [...this.journal.values()]
      .filter((e) => e.status === 'received' && e.seq <= this.contig && STACK_TYPES.has(e.type))
      .sort((a, b) => a.seq - b.seq);
    if (pending.length === 0) {
      this.updateApplied();
      return;
    }
    this.running = this.execute(pending).finally(() => {
      this.running = undefined;
      this.updateApplied();
      this.schedule();
    });
  }

  private async execute(pending: Entry[]): Promise<void> {
    // I4: per stack, the newest apply/remove supersedes the older pending commands.
    const newest = new Map<string, number>();
    for (const e of pending) {
      if (e.type !== 'stack.restart' && e.stack) newest.set(e.stack, e.seq);
    }
    for (const e of pending) {
      const latest = e.stack ? newest.get(e.stack) : undefined;
      if (latest !== undefined && e.seq < latest) {
        e.status = 'superseded';
        this.counts.superseded++;
        this.ack(e, 'superseded', undefined, `superseded by seq ${latest}`);
        continue;
      }
      e.status = 'executing';
      const outcome = await this.run(e);
      e.status = outcome.st === 'applied' ? 'done' : 'failed';
      if (outcome.st === 'applied') this.counts.applied++;
      this.ack(e, outcome.st, outcome.rc, outcome.msg);
    }
    this.changed();
  }

  private async run(e: Entry): Promise<{ st: Ack['st']; rc?: ReasonCode; msg?: string }> {
    this.changes++;
    try {
      return await this.runOne(e);
    } finally {
      this.changes++;
    }
  }

  private async runOne(e: Entry): Promise<{ st: Ack['st']; rc?: ReasonCode; msg?: string }> {
    const cmd = e.cmd;
    try {
      if (cmd.type === 'stack.apply') {
        const spec = e.spec ?? decodeSpec(cmd.body.spec, cmd.body.z === true);
        const target: DesiredStack = {
          name: cmd.body.stack,
          rev: cmd.body.rev,
          spec,
          digest: toHex(sha256(cmd.body.spec)),
          approvedCritical: false,
        };
        const previous = this.desired.get(target.name);
        this.desired.set(target.name, target);
        const out = await this.runtime.apply(target, previous, { deadlineMs: 120_000, runningForMs: 10_000 });
        if (out.status === 'applied') return { st: 'applied' };
        if (previous) this.desired.set(target.name, previous);
        else this.desired.delete(target.name);
        return { st: out.status, rc: out.reason, msg: out.detail };
      }
      if (cmd.type === 'stack.remove') {
        this.desired.delete(cmd.body.stack);
        await this.runtime.remove(cmd.body.stack, { volumes: cmd.body.vols === true });
        return { st: 'applied' };
      }
      if (cmd.type === 'stack.restart') {
        await this.runtime.restart(cmd.body.stack, cmd.body.svc ?? [], Date.now());
        return { st: 'applied' };
      }
      return { st: 'failed', rc: 'internal', msg: `${cmd.type} is not stack-bound` };
    } catch (err) {
      return { st: 'failed', rc: 'runtime-error', msg: (err as Error).message };
    }
  }

  private updateApplied(): void {
    let applied = this.contig;
    for (const e of this.journal.values()) {
      if ((e.status === 'received' || e.status === 'executing') && e.seq - 1 < applied) applied = e.seq - 1;
    }
    if (applied !== this.applied) {
      this.applied = applied;
      this.changed();
    }
    // Keep the journal bounded (the agent keeps `journalKeep` finished entries).
    if (this.journal.size > 64) {
      for (const e of [...this.journal.values()].sort((a, b) => a.seq - b.seq)) {
        if (this.journal.size <= 32 || e.seq > this.applied) break;
        this.journal.delete(e.seq);
      }
    }
  }

  // ---- uplink ([ENV-UP-1], [PAY-ACK], [PAY-STATE], [PAY-STATUS]) ------------------------------------

  private ack(e: Entry, st: Ack['st'], rc?: ReasonCode, msg?: string): void {
    e.ack = st;
    if (rc) e.rc = rc;
    if (msg) e.msg = msg;
    this.sendAck({
      st,
      seq: e.seq,
      id: e.cmd.id,
      type: e.type,
      ...(e.stack ? { stack: e.stack } : {}),
      ...(e.rev ? { rev: e.rev } : {}),
      ...(rc ? { rc } : {}),
      ...(msg ? { msg: msg.slice(0, 256) } : {}),
    });
  }

  private sendAck(fields: Omit<Ack, 'v' | 'site' | 'useq' | 'at'>): void {
    const ack: Ack = {
      v: PROTOCOL_VERSION,
      site: this.site,
      useq: ++this.useq,
      at: this.time.nowSec(),
      ...fields,
    };
    this.publish(this.topics.ack(this.site), encodeAck(ack, this.signer), false);
  }

  private publish(topic: string, payload: Uint8Array, retain: boolean): void {
    // Queued by MQTT.js while offline and resent on reconnect (its in-memory outgoing store).
    this.client?.publish(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), {
      qos: 1,
      retain,
    });
  }

  private viewing: Promise<StackState[]> | undefined;
  /** Bumped around every runtime operation: the runtime and `desired` change only in run(). */
  private changes = 0;
  private viewOf = -1;

  /** Refreshes `lastView` from the runtime (concurrent calls share one snapshot). */
  private view(): Promise<StackState[]> {
    this.viewing ??= this.buildView().finally(() => {
      this.viewing = undefined;
    });
    return this.viewing;
  }

  private async buildView(): Promise<StackState[]> {
    // The MemoryRuntime's snapshot hashes every service: reuse the last one while nothing ran.
    if (this.viewOf === this.changes) return this.lastView;
    const at = this.changes;
    const running = await this.runtime.snapshot();
    const out = running.map((s) => ({ ...s, want: this.desired.get(s.name)?.rev ?? 0 }));
    for (const [name, d] of this.desired) {
      if (!running.some((s) => s.name === name))
        out.push({ name, rev: 0, want: d.rev, h: 'unknown', svc: [] });
    }
    this.lastView = out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    this.viewOf = at;
    return this.lastView;
  }

  /** A change: a state delta and a status update, each at most once per min interval. */
  private changed(): void {
    void this.view().then(() => {
      this.publishState(false);
      this.publishStatus();
    });
  }

  private publishState(full: boolean): void {
    if (this.closing) return;
    const every = this.o.stateMinIntervalMs ?? 5000;
    if (!full) {
      if (this.stateTimer) return;
      const wait = this.lastStateAt + every - performance.now();
      if (wait > 0) {
        this.stateTimer = setTimeout(() => {
          this.stateTimer = undefined;
          void this.view().then(() => this.publishState(false));
        }, wait);
        return;
      }
    }
    const stacks = this.lastView;
    const now = new Map(stacks.map((s) => [s.name, JSON.stringify(s)]));
    const changed = full ? stacks : stacks.filter((s) => this.reported.get(s.name) !== now.get(s.name));
    const gone = full ? [] : [...this.reported.keys()].filter((n) => !now.has(n));
    if (!full && changed.length === 0 && gone.length === 0 && this.applied === this.reportedLast) return;
    if (!full) this.lastStateAt = performance.now();
    this.reported = now;
    this.reportedLast = this.applied;
    const state = encodeState(
      {
        v: PROTOCOL_VERSION,
        site: this.site,
        useq: ++this.useq,
        at: this.time.nowSec(),
        full,
        last: this.applied,
        trust: this.trust.version,
        stacks: changed,
        ...(gone.length ? { gone } : {}),
        alarms: [],
        drops: 0,
        agent: AGENT_VERSION,
      },
      this.signer,
    );
    this.publish(this.topics.state(this.site), state, false);
  }

  private status(online: boolean) {
    return buildSiteStatus({
      site: this.site,
      online,
      nowMs: Date.now(),
      agent: AGENT_VERSION,
      stacks: this.lastView,
      alarms: [],
      lastSeq: this.applied,
    });
  }

  private will(): Uint8Array {
    return encodeStatus(
      buildSiteStatus({
        site: this.site,
        online: false,
        nowMs: Date.now(),
        agent: AGENT_VERSION,
        reason: 'connection-lost',
      }),
    );
  }

  private publishStatus(): void {
    if (this.closing || this.statusTimer) return;
    const wait = this.lastStatusAt + (this.o.stateMinIntervalMs ?? 5000) - performance.now();
    if (wait > 0) {
      this.statusTimer = setTimeout(() => {
        this.statusTimer = undefined;
        this.publishStatus();
      }, wait);
      return;
    }
    this.lastStatusAt = performance.now();
    this.publish(this.topics.status(this.site), encodeStatus(this.status(true)), true);
  }
}

function timeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve(undefined), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

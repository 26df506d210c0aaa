/**
 * A simulated site for controller tests, speaking the real protocol: it connects as the site's MQTT
 * client (persistent session), opens every command with `openCommand` (the controller's signature, its
 * own site, expiry), records it, and answers with acks signed by the site's uplink key (`encodeAck`):
 * `accepted` then `applied`, once per (seq, id) like the agent's journal ([ORD-4]: duplicates are
 * re-acked, never re-applied). Its retained status says online; `goOffline()` publishes offline and
 * disconnects, leaving the session (and the commands queued at the broker) in place.
 */
import mqtt, { type MqttClient } from 'mqtt';
import {
  type Ack,
  type Command,
  encodeAck,
  encodeState,
  openCommand,
  PROTOCOL_VERSION,
  type Signer,
  type StackState,
  Topics,
  type TrustStore,
  toHex,
} from '../../../protocol/src/index.js';
import { waitFor } from '../../helpers/index.js';
import { siteSigner } from './keys.js';

export interface Received {
  readonly cmd: Command;
  readonly bytes: string;
  readonly kid: string;
}

export interface SimSiteOptions {
  /** Answer commands automatically (default true). */
  readonly autoAck?: boolean;
  readonly prefix?: string;
}

export class SimSite {
  readonly signer: Signer;
  readonly topics: Topics;
  /** Every delivery, duplicates included, in arrival order. */
  readonly deliveries: Received[] = [];
  /** First delivery of each seq. */
  readonly bySeq = new Map<number, Received>();
  /** Deliveries that failed openCommand (reason codes). */
  readonly rejected: string[] = [];
  /** Distinct seqs applied, in order. */
  readonly applied: number[] = [];
  private client: MqttClient | undefined;
  private useq = 0;
  private readonly stacks = new Map<string, StackState>();

  constructor(
    readonly site: string,
    readonly url: string,
    readonly trust: TrustStore,
    readonly opts: SimSiteOptions = {},
  ) {
    this.signer = siteSigner(site);
    this.topics = new Topics(opts.prefix);
  }

  get uplinkKeyB64(): string {
    return Buffer.from(this.signer.publicKey).toString('base64');
  }

  async connect(): Promise<void> {
    const status = (online: boolean) =>
      JSON.stringify({
        v: 1,
        site: this.site,
        online,
        ts: new Date().toISOString(),
        ...(online ? {} : { reason: 'connection-lost' }),
      });
    const client = await mqtt.connectAsync(this.url, {
      clientId: this.site,
      clean: false,
      protocolVersion: 4,
      reconnectPeriod: 0,
      will: {
        topic: this.topics.status(this.site),
        payload: Buffer.from(status(false)),
        qos: 1,
        retain: true,
      },
    });
    this.client = client;
    client.on('message', (_topic, payload) => this.onCommand(new Uint8Array(payload)));
    await client.subscribeAsync(this.topics.cmd(this.site), { qos: 1 });
    await client.publishAsync(this.topics.status(this.site), status(true), { qos: 1, retain: true });
  }

  /** Publishes the offline status and disconnects cleanly; the session and its queue stay at the broker. */
  async goOffline(): Promise<void> {
    if (!this.client) return;
    await this.client.publishAsync(
      this.topics.status(this.site),
      JSON.stringify({ v: 1, site: this.site, online: false, ts: new Date().toISOString(), reason: 'test' }),
      { qos: 1, retain: true },
    );
    await this.client.endAsync();
    this.client = undefined;
  }

  async close(): Promise<void> {
    await this.client?.endAsync(true);
    this.client = undefined;
  }

  private onCommand(bytes: Uint8Array): void {
    let opened: { cmd: Command; kid: string };
    try {
      opened = openCommand(bytes, {
        site: this.site,
        trust: this.trust,
        nowSec: Math.floor(Date.now() / 1000),
      });
    } catch (err) {
      this.rejected.push((err as { code?: string }).code ?? 'error');
      return;
    }
    const r: Received = { cmd: opened.cmd, bytes: toHex(bytes), kid: opened.kid };
    this.deliveries.push(r);
    const first = !this.bySeq.has(r.cmd.seq);
    if (first) this.bySeq.set(r.cmd.seq, r);
    if (this.opts.autoAck === false) return;
    if (first) {
      this.applied.push(r.cmd.seq);
      if (r.cmd.type === 'stack.apply') {
        const b = r.cmd.body as { stack: string; rev: number };
        this.stacks.set(b.stack, { name: b.stack, rev: b.rev, want: b.rev, h: 'healthy', svc: [] });
      }
    }
    void this.ackCommand(r.cmd, 'accepted')
      .then(() => this.ackCommand(r.cmd, 'applied'))
      .then(() => this.publishState(first));
  }

  async ackCommand(cmd: Command, st: Ack['st'], extra: Partial<Ack> = {}): Promise<void> {
    await this.sendAck({ st, seq: cmd.seq, id: cmd.id, type: cmd.type, ...extra });
  }

  async sendAck(
    fields: Omit<Ack, 'v' | 'site' | 'useq' | 'at'>,
    signer: Signer = this.signer,
  ): Promise<void> {
    const ack: Ack = {
      v: PROTOCOL_VERSION,
      site: this.site,
      useq: ++this.useq,
      at: Math.floor(Date.now() / 1000),
      ...fields,
    };
    await this.client?.publishAsync(this.topics.ack(this.site), Buffer.from(encodeAck(ack, signer)), {
      qos: 1,
    });
  }

  async publishState(changed = true): Promise<void> {
    if (!changed) return;
    const state = encodeState(
      {
        v: PROTOCOL_VERSION,
        site: this.site,
        useq: ++this.useq,
        at: Math.floor(Date.now() / 1000),
        full: true,
        last: this.applied.at(-1) ?? 0,
        trust: this.trust.version,
        stacks: [...this.stacks.values()],
        alarms: [],
      },
      this.signer,
    );
    await this.client?.publishAsync(this.topics.state(this.site), Buffer.from(state), { qos: 1 });
  }

  /** Raw publish on one of this site's uplink topics (forgery tests). */
  async publishRaw(channel: 'ack' | 'state' | 'status', payload: Uint8Array | string): Promise<void> {
    await this.client?.publishAsync(this.topics.site(this.site, channel), Buffer.from(payload), { qos: 1 });
  }

  async waitSeqs(n: number, timeoutMs = 10_000): Promise<void> {
    await waitFor(() => this.bySeq.size >= n, { timeoutMs, message: `${this.site} receives ${n} commands` });
  }

  /** The received commands in seq order. */
  commands(): Command[] {
    return [...this.bySeq.values()].map((r) => r.cmd).sort((a, b) => a.seq - b.seq);
  }
}

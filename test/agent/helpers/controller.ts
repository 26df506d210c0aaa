/**
 * A stand-in for the controller in agent tests: signs commands (tracking seq and prev per site),
 * publishes them over a real MQTT connection with QoS 1, and collects the agent's acks and states
 * (verified with openAck/openState against the site's uplink key) and its retained status.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import {
  type Ack,
  type CommandBodies,
  type CommandType,
  encodeCommand,
  encodeSpec,
  openAck,
  openState,
  PROTOCOL_VERSION,
  type Signer,
  type SiteStatus,
  type StackSpec,
  type State,
  Topics,
} from '../../../protocol/src/index.js';
import { waitFor } from '../../helpers/index.js';

/** What the stand-in controller needs: the site, a command-signing key, and the site's uplink key. */
export interface ControllerKeys {
  readonly site: string;
  readonly signer: Signer;
  keyFor(site: string): Uint8Array | undefined;
}

export interface CommandOpts {
  seq?: number;
  prev?: number;
  iat?: number;
  exp?: number;
  site?: string;
  signer?: Signer;
  id?: Uint8Array;
}

export const DIGEST = (n: number): Uint8Array => new Uint8Array(32).fill(n);

/** A small valid spec: `svcs` services pinned by digest; `tag` varies the content. */
export function spec(svcs: readonly string[] = ['web'], tag = 1): StackSpec {
  return {
    svc: Object.fromEntries(
      svcs.map((s) => [
        s,
        { img: `registry.local/acme/${s}`, dig: DIGEST(tag % 256), env: { REV: String(tag) } },
      ]),
    ),
  };
}

export class TestController {
  readonly topics: Topics;
  readonly acks: Ack[] = [];
  readonly states: State[] = [];
  readonly statuses: SiteStatus[] = [];
  /** Uplink messages that failed verification (should stay empty). */
  readonly bad: string[] = [];
  private client: MqttClient | undefined;
  private seq = 0;

  constructor(
    readonly pki: ControllerKeys,
    readonly url: string,
    prefix?: string,
    /** Extra MQTT options (TLS files for mqtts://). */
    private readonly mqttOpts: IClientOptions = {},
  ) {
    this.topics = new Topics(prefix);
  }

  get site(): string {
    return this.pki.site;
  }

  get lastSeq(): number {
    return this.seq;
  }

  async connect(): Promise<void> {
    // A persistent session, like the real controller: acks published while we were cut off wait for us.
    const client = await mqtt.connectAsync(this.url, {
      clientId: `test-controller-${randomBytes(4).toString('hex')}`,
      clean: false,
      protocolVersion: 4,
      reconnectPeriod: 200,
      ...this.mqttOpts,
    });
    this.client = client;
    client.on('message', (topic, payload) => {
      try {
        if (topic === this.topics.ack(this.site))
          this.acks.push(openAck(payload, this.pki.keyFor, this.site));
        else if (topic === this.topics.state(this.site))
          this.states.push(openState(payload, this.pki.keyFor, this.site));
        else if (topic === this.topics.status(this.site)) {
          this.statuses.push(JSON.parse(payload.toString('utf8')) as SiteStatus);
        }
      } catch (err) {
        this.bad.push(`${topic}: ${(err as Error).message}`);
      }
    });
    await client.subscribeAsync(
      [this.topics.ack(this.site), this.topics.state(this.site), this.topics.status(this.site)],
      { qos: 1 },
    );
  }

  /** Signs a command; by default the next seq, linked to the previous one. */
  command<T extends CommandType>(type: T, body: CommandBodies[T], o: CommandOpts = {}): Uint8Array {
    const seq = o.seq ?? this.seq + 1;
    const prev = o.prev ?? (o.seq === undefined ? this.seq : seq - 1);
    if (o.seq === undefined || seq > this.seq) this.seq = Math.max(this.seq, seq);
    const iat = o.iat ?? Math.floor(Date.now() / 1000);
    return encodeCommand(
      {
        v: PROTOCOL_VERSION,
        site: o.site ?? this.site,
        seq,
        prev,
        id: o.id ?? new Uint8Array(randomBytes(16)),
        iat,
        exp: o.exp ?? iat + 3600,
        type,
        body,
      } as never,
      o.signer ?? this.pki.signer,
    );
  }

  applyCmd(stack: string, rev: number, s: StackSpec = spec(['web'], rev), o: CommandOpts = {}): Uint8Array {
    const enc = encodeSpec(s, 'never');
    return this.command('stack.apply', { stack, rev, spec: enc.bytes }, o);
  }

  async publish(bytes: Uint8Array): Promise<void> {
    if (!this.client) throw new Error('not connected');
    await this.client.publishAsync(this.topics.cmd(this.site), Buffer.from(bytes), { qos: 1 });
  }

  async send<T extends CommandType>(
    type: T,
    body: CommandBodies[T],
    o: CommandOpts = {},
  ): Promise<Uint8Array> {
    const bytes = this.command(type, body, o);
    await this.publish(bytes);
    return bytes;
  }

  async apply(stack: string, rev: number, s?: StackSpec, o: CommandOpts = {}): Promise<Uint8Array> {
    const bytes = this.applyCmd(stack, rev, s, o);
    await this.publish(bytes);
    return bytes;
  }

  acksFor(seq: number): Ack[] {
    return this.acks.filter((a) => a.seq === seq);
  }

  async waitAck(pred: (a: Ack) => boolean, timeoutMs = 10_000, what = 'ack'): Promise<Ack> {
    return waitFor(() => this.acks.find(pred), { timeoutMs, message: what });
  }

  async waitStatus(seq: number, st: Ack['st'], timeoutMs = 10_000): Promise<Ack> {
    return this.waitAck((a) => a.seq === seq && a.st === st, timeoutMs, `ack ${st} for seq ${seq}`);
  }

  latestStatus(): SiteStatus | undefined {
    return this.statuses.at(-1);
  }

  async close(): Promise<void> {
    await this.client?.endAsync(true);
    this.client = undefined;
  }
}

/**
 * MQTT.js workloads of the broker benchmark: the same clients, topics and identities against every
 * broker. The publisher is the controller (`controller`), subscribers are agents (client id = site
 * id, clean=false, QoS 1 on `outpost/v1/site/<site>/cmd`), as in production; on the durable broker's
 * plain listener identities are the dev-only trusted `role:name` usernames, over TLS certificates.
 *
 * Payloads carry a per-workload nonce and an index, so a receiver counts distinct messages of its
 * own workload only (a stale redelivery from an earlier run is ignored, a duplicate is counted).
 */
import { randomBytes } from 'node:crypto';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';

export const PREFIX = 'outpost/v1';
export const cmdTopic = (site: string): string => `${PREFIX}/site/${site}/cmd`;

export interface TlsMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Where and how clients connect. */
export interface Target {
  readonly port: number;
  /** Present: TLS 1.3 with the client certificate of each identity (`controller` or a site id). */
  readonly tls?: (who: string) => TlsMaterial;
}

function clientOptions(
  t: Target,
  clientId: string,
  role: 'controller' | 'agent',
  clean: boolean,
): IClientOptions {
  const base: IClientOptions = {
    protocolVersion: 4,
    clientId,
    clean,
    keepalive: 60,
    reconnectPeriod: 0,
    connectTimeout: 20_000,
    manualConnect: true,
  };
  if (t.tls) {
    const m = t.tls(role === 'controller' ? 'controller' : clientId);
    return {
      ...base,
      protocol: 'mqtts',
      ca: m.ca,
      cert: m.cert,
      key: m.key,
      minVersion: 'TLSv1.3',
    } as IClientOptions;
  }
  // Ignored by aedes without hooks and by Mosquitto (anonymous); the identity on our plain listener.
  return {
    ...base,
    protocol: 'mqtt',
    username: `${role}:${role === 'controller' ? 'controller' : clientId}`,
  };
}

/** Connects (handlers registered before CONNECT, so nothing queued is missed). */
export async function open(
  t: Target,
  clientId: string,
  role: 'controller' | 'agent',
  clean: boolean,
  onMessage?: (topic: string, payload: Buffer) => void,
): Promise<MqttClient> {
  const c = connect({ host: '127.0.0.1', port: t.port, ...clientOptions(t, clientId, role, clean) });
  if (onMessage) c.on('message', onMessage);
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error): void => {
      c.removeListener('connect', ok);
      c.removeListener('error', fail);
      c.removeListener('close', closed);
      c.end(true);
      reject(new Error(`${clientId}: ${err.message}`));
    };
    const closed = (): void => fail(new Error('connection closed before CONNACK'));
    const ok = (): void => {
      c.removeListener('error', fail);
      c.removeListener('close', closed);
      resolve();
    };
    c.once('connect', ok);
    c.once('error', fail);
    c.once('close', closed);
    c.connect();
  });
  c.on('error', () => undefined); // reported through the pending operation, or the timeout
  return c;
}

export async function close(c: MqttClient): Promise<void> {
  await c.endAsync(false);
}

/** Runs `fn` over `items` with at most `parallel` at a time. */
export async function inBatches<T>(
  items: readonly T[],
  parallel: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
}

/** A payload source: `size` bytes, nonce in bytes 0-3, index in bytes 4-7. */
export class Payloads {
  readonly nonce = randomBytes(4).readUInt32BE(0);
  readonly #filler: Buffer;

  constructor(readonly size: number) {
    if (size < 8) throw new Error('payloads need at least 8 bytes');
    this.#filler = randomBytes(size);
  }

  make(i: number): Buffer {
    const b = Buffer.from(this.#filler);
    b.writeUInt32BE(this.nonce, 0);
    b.writeUInt32BE(i, 4);
    return b;
  }
}

/** Counts distinct messages 0..n-1 of one Payloads source; `done` resolves at the last one. */
export class Receiver {
  readonly #seen: Uint8Array;
  distinct = 0;
  duplicates = 0;
  lastAt = 0;
  readonly done: Promise<void>;
  #resolve!: () => void;

  constructor(
    readonly n: number,
    private readonly nonce: number,
  ) {
    this.#seen = new Uint8Array(n);
    this.done = new Promise((r) => {
      this.#resolve = r;
    });
  }

  readonly onMessage = (_topic: string, payload: Buffer): void => {
    if (payload.length < 8 || payload.readUInt32BE(0) !== this.nonce) return;
    const i = payload.readUInt32BE(4);
    if (i >= this.n) return;
    if (this.#seen[i] === 1) {
      this.duplicates++;
      return;
    }
    this.#seen[i] = 1;
    this.distinct++;
    if (this.distinct === this.n) {
      this.lastAt = performance.now();
      this.#resolve();
    }
  };

  async wait(ms: number, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${what}: received ${this.distinct} of ${this.n} within ${ms} ms`)),
            ms,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Publishes `n` QoS 1 messages (`topicOf(i)`, `payloads.make(i)`) keeping at most `window` without a
 * PUBACK; resolves when every PUBACK is in.
 */
export function publishWindowed(
  c: MqttClient,
  n: number,
  topicOf: (i: number) => string,
  payloads: Payloads,
  window: number,
): Promise<void> {
  if (n === 0) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let next = 0;
    let acked = 0;
    let failed = false;
    const pump = (): void => {
      while (!failed && next < n && next - acked < window) {
        const i = next++;
        c.publish(topicOf(i), payloads.make(i), { qos: 1 }, (err) => {
          if (failed) return;
          if (err) {
            failed = true;
            reject(err);
            return;
          }
          acked++;
          if (acked === n) resolve();
          else pump();
        });
      }
    };
    pump();
  });
}

export interface RateResult {
  readonly ms: number;
  readonly perSec: number;
  readonly duplicates: number;
}

export interface RateOptions {
  readonly n: number;
  readonly payloadBytes: number;
  readonly window: number;
  readonly site: string;
  readonly timeoutMs: number;
}

/**
 * Live QoS 1 throughput: `site` online (clean=false, QoS 1), the controller publishes n messages;
 * from the first publish to the last distinct message at the subscriber.
 */
export async function liveThroughput(t: Target, o: RateOptions): Promise<RateResult> {
  const payloads = new Payloads(o.payloadBytes);
  const rx = new Receiver(o.n, payloads.nonce);
  const sub = await open(t, o.site, 'agent', false, rx.onMessage);
  let pub: MqttClient | undefined;
  try {
    await sub.subscribeAsync(cmdTopic(o.site), { qos: 1 });
    pub = await open(t, 'controller', 'controller', true);
    const topic = cmdTopic(o.site);
    const t0 = performance.now();
    const acked = publishWindowed(pub, o.n, () => topic, payloads, o.window);
    await rx.wait(o.timeoutMs, `live throughput to ${o.site}`);
    await acked;
    const ms = rx.lastAt - t0;
    return { ms, perSec: (o.n * 1000) / ms, duplicates: rx.duplicates };
  } finally {
    if (pub) await close(pub);
    await close(sub);
  }
}

/**
 * Offline-queue drain: `site` subscribes (clean=false) and disconnects, the controller publishes n
 * messages and has every PUBACK; then `site` reconnects: from its CONNECT to the last distinct
 * message.
 */
export async function offlineDrain(t: Target, o: RateOptions): Promise<RateResult> {
  const payloads = new Payloads(o.payloadBytes);
  const first = await open(t, o.site, 'agent', false);
  await first.subscribeAsync(cmdTopic(o.site), { qos: 1 });
  await close(first);
  await new Promise((r) => setTimeout(r, 100)); // let the broker see the disconnect
  const pub = await open(t, 'controller', 'controller', true);
  const topic = cmdTopic(o.site);
  try {
    await publishWindowed(pub, o.n, () => topic, payloads, o.window);
  } finally {
    await close(pub);
  }
  const rx = new Receiver(o.n, payloads.nonce);
  const t0 = performance.now();
  const again = await open(t, o.site, 'agent', false, rx.onMessage);
  try {
    await rx.wait(o.timeoutMs, `offline drain to ${o.site}`);
    const ms = rx.lastAt - t0;
    return { ms, perSec: (o.n * 1000) / ms, duplicates: rx.duplicates };
  } finally {
    await close(again);
  }
}

/**
 * MQTT transport ([MQTT-1], [MQTT-2], I5): MQTT.js, MQTT 3.1.1, client id = site id, persistent
 * session (clean=false), QoS 1, TLS with the site certificate (mqtts://) or plain TCP for loopback
 * tests, keepalive from config, reconnect with bounded exponential backoff and jitter, and a last will
 * that sets the retained status offline.
 *
 * PUBACK only after the SQLite commit: MQTT.js sends the PUBACK of a QoS 1 message when
 * `handleMessage(packet, callback)` calls `callback()` with no error, and sends none when it is called
 * with an error (`customHandleAcks` is honoured only for MQTT 5, so 3.1.1 uses this documented hook).
 * The command handler is synchronous (better-sqlite3 commits before it returns), and MQTT.js runs one
 * packet at a time through it, so commands are journalled in arrival order. A command that could not
 * be committed (disk full) gets no PUBACK; the broker keeps it and redelivers it after `bounce()`.
 */
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { leanMqttConnect } from './mqtt-connect.js';
import type { Publisher } from './outbox.js';

export type MqttFactory = (url: string, opts: IClientOptions) => MqttClient;

export interface TransportOptions {
  readonly url: string;
  readonly clientId: string;
  readonly keepaliveSec: number;
  readonly connectTimeoutMs: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer };
  readonly cmdTopic: string;
  readonly statusTopic: string;
  /** Fresh last-will payload (retained offline status) for each connection. */
  readonly will: () => Uint8Array;
}

export interface TransportHandlers {
  /** Synchronous: true when the command is durably handled (PUBACK it), false to withhold the PUBACK. */
  onCommand(payload: Uint8Array): boolean;
  onConnect(): void;
  onDisconnect(): void;
}

export class Transport implements Publisher {
  private client: MqttClient | undefined;
  private attempt = 0;
  private closing = false;
  private wasConnected = false;
  private subscribed = false;

  constructor(
    private readonly opts: TransportOptions,
    private readonly handlers: TransportHandlers,
    private readonly log: Logger,
    private readonly factory: MqttFactory = leanMqttConnect,
  ) {}

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /** Connected and the command subscription acknowledged (commands published now reach us). */
  get ready(): boolean {
    return this.connected && this.subscribed;
  }

  /** Starts connecting; returns at once (the agent runs offline until a broker answers). */
  start(): void {
    const o = this.opts;
    const options: IClientOptions = {
      clientId: o.clientId,
      protocolVersion: 4,
      clean: false,
      keepalive: o.keepaliveSec,
      connectTimeout: o.connectTimeoutMs,
      reconnectPeriod: this.nextDelay(),
      resubscribe: false,
      manualConnect: true,
      queueQoSZero: false,
      // No pre-generated cache of 65,536 two-byte Buffers (~6 MB of heap) in mqtt-packet (ADR 0005).
      writeCache: false,
      will: { topic: o.statusTopic, payload: Buffer.from(o.will()), qos: 1, retain: true },
      ...(o.tls
        ? {
            cert: o.tls.cert,
            key: o.tls.key,
            ca: o.tls.ca,
            rejectUnauthorized: true,
            minVersion: 'TLSv1.3' as const,
          }
        : {}),
    };
    const client = this.factory(o.url, options);
    this.client = client;
    client.handleMessage = (packet, callback) => {
      if (packet.topic !== o.cmdTopic) {
        callback();
        return;
      }
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      let ok = false;
      try {
        ok = this.handlers.onCommand(new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'command handler threw');
      }
      if (ok) callback();
      else callback(new Error('command not committed: PUBACK withheld'));
    };
    // Runs before MQTT.js schedules its reconnect: sets this attempt's delay and a fresh will.
    client.prependListener('close', () => {
      this.subscribed = false;
      if (client.options.will) client.options.will.payload = Buffer.from(o.will());
      client.options.reconnectPeriod = this.closing ? 0 : this.nextDelay();
      if (this.wasConnected) {
        this.wasConnected = false;
        this.log.warn({ retryMs: client.options.reconnectPeriod }, 'disconnected');
        this.handlers.onDisconnect();
      }
    });
    client.on('connect', () => {
      this.attempt = 0;
      this.wasConnected = true;
      this.log.info({ url: redact(o.url) }, 'connected');
      client.subscribe(o.cmdTopic, { qos: 1 }, (err, granted) => {
        if (err || granted?.[0]?.qos !== 1) {
          this.log.error({ err: err?.message, granted: granted?.[0]?.qos }, 'command subscription refused');
          return;
        }
        this.subscribed = true;
        this.log.info({ topic: o.cmdTopic }, 'subscribed');
      });
      this.handlers.onConnect();
    });
    client.on('error', (err) => this.log.warn({ err: err.message }, 'mqtt error'));
    client.connect();
  }

  /** Bounded exponential backoff with jitter: base * 2^attempt, capped, scaled by [0.5, 1). */
  private nextDelay(): number {
    const { reconnectMinMs: min, reconnectMaxMs: max } = this.opts;
    const base = Math.min(max, min * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(min, Math.round(base * (0.5 + Math.random() / 2)));
  }

  publish(topic: string, payload: Uint8Array, opts: { retain: boolean }): Promise<void> {
    const client = this.client;
    if (!client) return Promise.reject(new Error('transport not started'));
    return new Promise((resolve, reject) => {
      client.publish(
        topic,
        Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
        { qos: 1, retain: opts.retain },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /**
   * Drops the connection (no DISCONNECT: the broker keeps the session and the unacknowledged commands)
   * so that it redelivers them after the reconnect.
   */
  bounce(): void {
    if (!this.client || this.closing) return;
    this.attempt = 0;
    this.log.info('reconnecting to get withheld commands redelivered');
    this.client.stream?.destroy();
  }

  /** Publishes `final` (retained status) if connected, then disconnects cleanly (no will). */
  async close(final?: Uint8Array): Promise<void> {
    const client = this.client;
    this.closing = true;
    if (!client) return;
    client.options.reconnectPeriod = 0;
    if (final && client.connected) {
      await withTimeout(this.publish(this.opts.statusTopic, final, { retain: true }), 2000).catch(
        () => undefined,
      );
    }
    await withTimeout(client.endAsync(), 2000).catch(() => client.endAsync(true));
    this.client = undefined;
  }
}

function redact(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timeout')), ms);
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

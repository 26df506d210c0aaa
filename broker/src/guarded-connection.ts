/**
 * What aedes reads from and writes to: a Duplex over the client's socket (TCP or TLS) that
 *
 * - frames the inbound byte stream by MQTT fixed headers (type + remaining length) without parsing
 *   bodies, and drops the connection on a packet larger than `maxPacketBytes` — BEFORE the MQTT
 *   parser buffers it — or on a malformed header (reserved type 0/15, a length over 4 bytes);
 * - counts bytes and PUBLISH packets in both directions for the metrics;
 * - keeps the socket's back-pressure: a socket that does not drain makes `write()` return false, so
 *   aedes' drain timeout (limits.drainTimeoutMs) disconnects slow consumers.
 *
 * aedes sees an ordinary stream; nothing here depends on aedes internals.
 */

import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { RejectReason } from './reasons.js';

const PUBLISH = 3;

export type FrameViolation = {
  reason: Extract<RejectReason, 'packet-too-large' | 'malformed-packet'>;
  detail: string;
};

/** Incremental MQTT fixed-header framer (MQTT 3.1.1 §2.2). */
export class MqttFramer {
  #state: 'header' | 'length' | 'body' = 'header';
  #type = 0;
  #len = 0;
  #mult = 1;
  #lenBytes = 0;
  #remaining = 0;

  constructor(
    private readonly maxPacketBytes: number,
    private readonly onPacket: (type: number, bytes: number) => void,
  ) {}

  feed(chunk: Uint8Array): FrameViolation | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.#state === 'header') {
        const type = chunk[i]! >> 4;
        if (type === 0 || type === 15)
          return { reason: 'malformed-packet', detail: `reserved packet type ${type}` };
        this.#type = type;
        this.#len = 0;
        this.#mult = 1;
        this.#lenBytes = 0;
        this.#state = 'length';
        i++;
      } else if (this.#state === 'length') {
        const b = chunk[i]!;
        i++;
        this.#len += (b & 0x7f) * this.#mult;
        this.#mult *= 128;
        this.#lenBytes++;
        if (b & 0x80) {
          if (this.#lenBytes >= 4)
            return { reason: 'malformed-packet', detail: 'remaining length over 4 bytes' };
          continue;
        }
        const total = 1 + this.#lenBytes + this.#len;
        if (total > this.maxPacketBytes) {
          return { reason: 'packet-too-large', detail: `${total} > ${this.maxPacketBytes} bytes` };
        }
        this.onPacket(this.#type, total);
        this.#remaining = this.#len;
        this.#state = this.#remaining === 0 ? 'header' : 'body';
      } else {
        const take = Math.min(this.#remaining, chunk.length - i);
        i += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#state = 'header';
      }
    }
    return undefined;
  }
}

export interface ConnectionMeter {
  bytesIn(n: number): void;
  bytesOut(n: number): void;
  publishIn(): void;
  publishOut(): void;
}

export interface GuardedConnectionOptions {
  readonly maxPacketBytes: number;
  readonly meter: ConnectionMeter;
  /** Called once when the inbound stream breaks a framing rule; the connection is then destroyed. */
  readonly onViolation: (v: FrameViolation) => void;
}

export class GuardedConnection extends Duplex {
  readonly socket: Socket;
  readonly #meter: ConnectionMeter;
  readonly #inbound: MqttFramer;
  readonly #outbound: MqttFramer;

  constructor(socket: Socket, opts: GuardedConnectionOptions) {
    super({ allowHalfOpen: false, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
    this.socket = socket;
    this.#meter = opts.meter;
    this.#inbound = new MqttFramer(opts.maxPacketBytes, (type) => {
      if (type === PUBLISH) this.#meter.publishIn();
    });
    // Our own output is never refused; the framer only counts PUBLISH packets going out.
    this.#outbound = new MqttFramer(Number.MAX_SAFE_INTEGER, (type) => {
      if (type === PUBLISH) this.#meter.publishOut();
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.destroyed) return;
      this.#meter.bytesIn(chunk.length);
      const v = this.#inbound.feed(chunk);
      if (v) {
        opts.onViolation(v);
        this.destroy();
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  override _read(): void {
    this.socket.resume();
  }

  #account(chunk: Buffer): void {
    this.#meter.bytesOut(chunk.length);
    this.#outbound.feed(chunk);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb(new Error('connection closed'));
      return;
    }
    this.#account(chunk);
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb(new Error('connection closed'));
      return;
    }
    // One buffer, one iovec: mqtt-packet writes a PUBLISH as ~6 small chunks, and a writev of
    // hundreds of tiny iovecs cost the kernel far more than copying them here (ADR 0008).
    const buffers: Buffer[] = [];
    let total = 0;
    for (const { chunk } of chunks) {
      this.#account(chunk);
      buffers.push(chunk);
      total += chunk.length;
    }
    const ok = this.socket.write(buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers, total));
    if (ok) cb();
    else this.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

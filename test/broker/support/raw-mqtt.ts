/**
 * Hand-built MQTT 3.1.1 packets and a raw loopback socket, for feeding the broker bytes no client
 * library would send (malformed, oversized, out of order).
 */
import { connect, type Socket } from 'node:net';

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
}

function packet(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first]), varint(body.length), body]);
}

export function connectPacket(
  clientId: string,
  opts: { keepalive?: number; username?: string; clean?: boolean } = {},
): Buffer {
  const flags = (opts.clean === false ? 0 : 0x02) | (opts.username ? 0x80 : 0);
  const ka = opts.keepalive ?? 30;
  const header = Buffer.concat([str('MQTT'), Buffer.from([4, flags, ka >> 8, ka & 0xff])]);
  return packet(0x10, Buffer.concat([header, str(clientId), ...(opts.username ? [str(opts.username)] : [])]));
}

export function publishPacket(
  topic: string,
  payload: Buffer | string,
  qos: 0 | 1 = 0,
  messageId = 1,
): Buffer {
  const id = qos > 0 ? Buffer.from([messageId >> 8, messageId & 0xff]) : Buffer.alloc(0);
  return packet(0x30 | (qos << 1), Buffer.concat([str(topic), id, Buffer.from(payload)]));
}

export function subscribePacket(filter: string, qos = 0, messageId = 1): Buffer {
  return packet(
    0x82,
    Buffer.concat([Buffer.from([messageId >> 8, messageId & 0xff]), str(filter), Buffer.from([qos])]),
  );
}

export function pubackPacket(messageId: number): Buffer {
  return packet(0x40, Buffer.from([messageId >> 8, messageId & 0xff]));
}

export interface RawConnection {
  readonly socket: Socket;
  /** Everything received so far. */
  received(): Buffer;
  /** Resolves when the broker closed the connection; rejects after `timeoutMs`. */
  closed(timeoutMs?: number): Promise<void>;
  /** Resolves once at least `n` bytes arrived; rejects after `timeoutMs`. */
  bytes(n: number, timeoutMs?: number): Promise<Buffer>;
}

export function rawConnect(port: number): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let isClosed = false;
    const waiters: Array<() => void> = [];
    const notify = () => {
      for (const w of waiters.splice(0)) w();
    };
    socket.on('data', (d) => {
      chunks.push(d);
      notify();
    });
    socket.on('close', () => {
      isClosed = true;
      notify();
    });
    socket.on('error', () => undefined);
    socket.once('connect', () => {
      const received = () => Buffer.concat(chunks);
      const until = (cond: () => boolean, timeoutMs: number, what: string) =>
        new Promise<void>((res, rej) => {
          const timer = setTimeout(
            () => rej(new Error(`raw connection: ${what} not within ${timeoutMs} ms`)),
            timeoutMs,
          );
          const check = () => {
            if (cond()) {
              clearTimeout(timer);
              res();
            } else waiters.push(check);
          };
          check();
        });
      resolve({
        socket,
        received,
        closed: (timeoutMs = 5000) => until(() => isClosed, timeoutMs, 'close'),
        bytes: async (n, timeoutMs = 5000) => {
          await until(() => received().length >= n || isClosed, timeoutMs, `${n} bytes`);
          return received();
        },
      });
    });
    socket.once('error', reject);
  });
}

/**
 * The TCP and TLS listeners: accept, rate-limit, count, wrap each socket in a GuardedConnection and
 * hand it to aedes. TLS 1.3 only; client certificates are requested but verified at CONNECT (so a
 * SCADA client without one may log in with a password, and every refusal gets a logged reason).
 */
import { readFile } from 'node:fs/promises';
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net';
import {
  createSecureContext,
  createServer as createTlsServer,
  type SecureContextOptions,
  type TLSSocket,
  type Server as TlsServer,
} from 'node:tls';
import type { Aedes } from 'aedes';
import type { Logger } from 'pino';
import type { TlsFiles } from './config.js';
import type { ConnectionTable, ListenerKind } from './connections.js';
import { revokedSerials } from './crl.js';
import { BrokerError } from './errors.js';
import { GuardedConnection } from './guarded-connection.js';
import type { BrokerMetrics } from './metrics.js';
import type { ConnectionRateLimiter } from './rate-limit.js';
import type { RejectReason } from './reasons.js';

export interface TlsMaterial {
  readonly options: SecureContextOptions;
  /** Revoked serials of the loaded CRL (empty without one). */
  readonly revoked: ReadonlySet<string>;
  readonly crlLoaded: boolean;
}

async function readOrThrow(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new BrokerError('tls', `cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Reads certificate, key, CA and (if present) CRL, and checks that they make a secure context. */
export async function loadTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const cert = await readOrThrow(files.cert, 'certificate');
  const key = await readOrThrow(files.key, 'key');
  const ca = await readOrThrow(files.ca, 'CA');
  let crl: Buffer | undefined;
  if (files.crl) {
    try {
      crl = await readFile(files.crl);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new BrokerError('tls', `cannot read CRL ${files.crl}: ${(err as Error).message}`);
      }
    }
  }
  let revoked = new Set<string>();
  if (crl) {
    try {
      revoked = revokedSerials(crl.toString('latin1'));
    } catch (err) {
      throw new BrokerError('tls', `CRL ${files.crl}: ${(err as Error).message}`);
    }
  }
  const options: SecureContextOptions = { cert, key, ca, ...(crl && { crl }), minVersion: 'TLSv1.3' };
  try {
    createSecureContext(options);
  } catch (err) {
    throw new BrokerError('tls', `TLS material does not load: ${(err as Error).message}`);
  }
  return { options, revoked, crlLoaded: crl !== undefined };
}

export interface AcceptDeps {
  readonly aedes: Aedes;
  readonly connections: ConnectionTable;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
  readonly limiter: ConnectionRateLimiter;
  readonly maxConnections: number;
  readonly maxPacketBytes: number;
  readonly refuse: (reason: RejectReason, fields: Record<string, unknown>, msg: string) => void;
  /** Every raw socket, so close() can end them all. */
  readonly sockets: Set<Socket>;
}

function track(deps: AcceptDeps, socket: Socket): void {
  deps.sockets.add(socket);
  socket.once('close', () => deps.sockets.delete(socket));
}

/** Rate limit and connection cap, at TCP accept; false when the socket was refused and destroyed. */
function admit(deps: AcceptDeps, socket: Socket): boolean {
  deps.metrics.accepted.inc();
  const remote = socket.remoteAddress ?? 'unknown';
  if (deps.connections.size >= deps.maxConnections) {
    deps.refuse('too-many-connections', { remote }, 'connection refused');
    socket.destroy();
    return false;
  }
  const decision = deps.limiter.allow(remote);
  if (decision !== 'ok') {
    deps.refuse('rate-limited', { remote, limit: decision }, 'connection refused');
    socket.destroy();
    return false;
  }
  return true;
}

function handOver(deps: AcceptDeps, socket: Socket | TLSSocket, listener: ListenerKind): void {
  socket.setNoDelay(true);
  socket.setKeepAlive(true, 60_000);
  const remoteAddress = socket.remoteAddress ?? 'unknown';
  // `ctx` is assigned before any data can flow (the socket emits on a later tick).
  let role: () => string = () => 'none';
  const m = deps.metrics;
  const conn = new GuardedConnection(socket, {
    maxPacketBytes: deps.maxPacketBytes,
    meter: {
      bytesIn: (n) => m.bytesIn.inc(role(), n),
      bytesOut: (n) => m.bytesOut.inc(role(), n),
      publishIn: () => m.messagesIn.inc(role()),
      publishOut: () => m.messagesOut.inc(role()),
    },
    onViolation: (v) =>
      deps.refuse(
        v.reason,
        {
          remote: remoteAddress,
          clientId: ctx.identity?.clientId ?? ctx.connect?.clientId,
          detail: v.detail,
        },
        'connection dropped',
      ),
  });
  const ctx = deps.connections.add({ listener, remoteAddress, socket, conn });
  role = () => ctx.role;
  conn.on('error', () => undefined); // aedes attaches its own; this one only prevents an unhandled 'error'
  deps.aedes.handle(conn);
}

export function createPlainListener(deps: AcceptDeps): Server {
  const server = createNetServer((socket) => {
    track(deps, socket);
    if (admit(deps, socket)) handOver(deps, socket, 'plain');
  });
  server.on('error', (err) => deps.log.error({ err }, 'plain listener error'));
  return server;
}

export function createTlsListener(
  deps: AcceptDeps,
  material: TlsMaterial,
  handshakeTimeoutMs: number,
): TlsServer {
  // Sockets refused at accept, by remote address and port, so their failed handshakes are not counted twice.
  const refused = new Set<string>();
  const key = (s: Socket) => `${s.remoteAddress}|${s.remotePort}`;
  const server = createTlsServer({
    ...material.options,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
    handshakeTimeout: handshakeTimeoutMs,
  });
  // 'connection' is the raw TCP socket, before the handshake: refuse cheaply there.
  server.on('connection', (socket: Socket) => {
    track(deps, socket);
    if (!admit(deps, socket)) {
      const k = key(socket);
      refused.add(k);
      setTimeout(() => refused.delete(k), 5000).unref();
    }
  });
  server.on('secureConnection', (tlsSocket: TLSSocket) => handOver(deps, tlsSocket, 'tls'));
  server.on('tlsClientError', (err: NodeJS.ErrnoException, tlsSocket: TLSSocket) => {
    if (refused.has(key(tlsSocket))) return;
    deps.refuse(
      'tls-handshake',
      { remote: tlsSocket.remoteAddress, code: err.code, detail: err.message.slice(0, 200) },
      'TLS handshake failed',
    );
    tlsSocket.destroy();
  });
  server.on('error', (err) => deps.log.error({ err }, 'TLS listener error'));
  return server;
}

/**
 * `backlog`: connections the kernel completes and queues until the broker accepts them. Node's
 * default (511) overflowed in a reconnect storm of 3,000 sites while the event loop was busy with
 * the first CONNECTs: the kernel dropped the rest, and their clients waited out SYN retransmits and
 * connect timeouts (12,434 listen overflows in one storm; with 4096, none).
 */
export function listen(server: Server, port: number, host: string, backlog = 511): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new BrokerError('listen', `${host}:${port}: ${err.message}`));
    server.once('error', onError);
    server.listen({ port, host, backlog }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}

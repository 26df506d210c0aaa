/**
 * The comparison for the wire benchmark: the same command delivered the way many fleet tools do it,
 * as gzip'd JSON that the device polls for over HTTPS. A minimal loopback HTTPS server (TLS 1.3,
 * client certificate required, like our MQTT listener) answers `GET /v1/sites/<site>/desired` with
 * `304 Not Modified` while the device's ETag is current, and with the gzip'd JSON command when there
 * is a new one. The client is node:https; bytes are counted as TCP payload at the fault proxy between
 * them. Two client behaviours:
 *
 * - `keep-alive`: one persistent TLS connection, reused by every poll (the most favourable case for
 *   polling; cellular NAT and server idle timeouts often close an idle connection between polls);
 * - `new connection`: a TLS connection per poll, with TLS 1.3 session resumption (node's https.Agent
 *   caches sessions), as a poller with a long interval typically does.
 */

import { Agent, createServer, request, type Server } from 'node:https';
import { gzipSync } from 'node:zlib';
import type { FaultProxy } from '../../test/helpers/fault-proxy.js';

export interface PollTls {
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
}

export interface PollServer {
  readonly port: number;
  /** Sets the command the next poll gets (and a new ETag); undefined: nothing new. */
  setCommand(json: unknown): void;
  close(): Promise<void>;
}

export async function startPollServer(tls: PollTls, site: string): Promise<PollServer> {
  let body: Buffer | undefined;
  let etag = '"0"';
  let version = 0;
  const server: Server = createServer(
    {
      key: tls.serverKey,
      cert: tls.serverCert,
      ca: tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (req, res) => {
      if (req.url !== `/v1/sites/${site}/desired`) {
        res.writeHead(404).end();
        return;
      }
      if (!body || req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', etag });
      res.end(body);
    },
  );
  server.keepAliveTimeout = 300_000;
  server.headersTimeout = 310_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return {
    port: addr.port,
    setCommand(json) {
      version++;
      etag = `"${version}"`;
      body = json === undefined ? undefined : gzipSync(Buffer.from(JSON.stringify(json)));
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface PollClient {
  /** One poll; resolves with the status code and the (decoded length of the) body. */
  poll(): Promise<{ status: number; bytes: number }>;
  close(): void;
}

export function pollClient(tls: PollTls, port: number, site: string, keepAlive: boolean): PollClient {
  const agent = new Agent({ keepAlive, maxSockets: 1, maxCachedSessions: 10 });
  let etag: string | undefined;
  return {
    poll() {
      return new Promise((resolve, reject) => {
        const req = request(
          {
            host: 'localhost',
            port,
            path: `/v1/sites/${site}/desired`,
            method: 'GET',
            agent,
            ca: tls.ca,
            cert: tls.clientCert,
            key: tls.clientKey,
            minVersion: 'TLSv1.3',
            headers: { 'accept-encoding': 'gzip', ...(etag ? { 'if-none-match': etag } : {}) },
          },
          (res) => {
            let n = 0;
            res.on('data', (c: Buffer) => {
              n += c.length;
            });
            res.on('end', () => {
              if (typeof res.headers.etag === 'string') etag = res.headers.etag;
              resolve({ status: res.statusCode ?? 0, bytes: n });
            });
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end();
      });
    },
    close() {
      agent.destroy();
    },
  };
}

export interface PollBytes {
  /** First poll on a fresh connection (TLS handshake with client certificate, 304). */
  readonly firstPoll: number;
  /** An idle poll (304), median. */
  readonly idlePoll: number;
  /** The poll that carries the command (200, gzip'd JSON). */
  readonly commandPoll: number;
  /** The command's JSON and its gzip'd size (the HTTP body). */
  readonly jsonBytes: number;
  readonly gzipBytes: number;
}

async function quiet(proxy: FaultProxy, ms = 300): Promise<void> {
  let last = -1;
  for (let i = 0; i < 200; i++) {
    const b = proxy.bytes.up + proxy.bytes.down;
    if (b === last) return;
    last = b;
    await new Promise((r) => setTimeout(r, ms));
  }
}

const total = (p: FaultProxy): number => p.bytes.up + p.bytes.down;

/**
 * Measures one client behaviour: `idlePolls` polls with nothing new, then one that carries
 * `command`. The proxy sits between the client and the server (its target is the server's port).
 */
export async function measurePolling(
  tls: PollTls,
  server: PollServer,
  proxy: FaultProxy,
  site: string,
  keepAlive: boolean,
  command: unknown,
  idlePolls: number,
): Promise<PollBytes> {
  server.setCommand(undefined);
  const client = pollClient(tls, proxy.port, site, keepAlive);
  try {
    await quiet(proxy);
    let b0 = total(proxy);
    const first = await client.poll();
    if (first.status !== 304) throw new Error(`first poll: HTTP ${first.status}`);
    await quiet(proxy);
    const firstPoll = total(proxy) - b0;
    const idle: number[] = [];
    for (let i = 0; i < idlePolls; i++) {
      b0 = total(proxy);
      const r = await client.poll();
      if (r.status !== 304) throw new Error(`idle poll: HTTP ${r.status}`);
      await quiet(proxy);
      idle.push(total(proxy) - b0);
    }
    server.setCommand(command);
    b0 = total(proxy);
    const r = await client.poll();
    if (r.status !== 200) throw new Error(`command poll: HTTP ${r.status}`);
    await quiet(proxy);
    const commandPoll = total(proxy) - b0;
    const json = Buffer.from(JSON.stringify(command));
    idle.sort((a, b) => a - b);
    return {
      firstPoll,
      idlePoll: idle[idle.length >> 1] ?? Number.NaN,
      commandPoll,
      jsonBytes: json.length,
      gzipBytes: gzipSync(json).length,
    };
  } finally {
    client.close();
  }
}

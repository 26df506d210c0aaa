/**
 * A real aedes broker in-process on 127.0.0.1 (plain TCP, port 0 by default) with aedes' in-memory
 * persistence: sessions and queued QoS 1 messages survive `pause()`/`resume()` (the listener goes away
 * and every connection is cut, the broker state stays), which is how tests take the network away.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';

export interface TestBroker {
  readonly aedes: Aedes;
  readonly port: number;
  readonly url: string;
  /** Stops listening and cuts every connection (no DISCONNECT: wills fire, sessions persist). */
  pause(): Promise<void>;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

export async function startTestBroker(port = 0): Promise<TestBroker> {
  const aedes = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const open = async (p: number) => {
    const s = createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      aedes.handle(sock);
    });
    const bound = await listen(s, p);
    server = s;
    return bound;
  };
  const bound = await open(port);
  const stop = async () => {
    const s = server;
    server = undefined;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  return {
    aedes,
    port: bound,
    url: `mqtt://127.0.0.1:${bound}`,
    pause: stop,
    async resume() {
      if (!server) await open(bound);
    },
    async close() {
      await stop();
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}

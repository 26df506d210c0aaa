/**
 * A real aedes broker in-process on 127.0.0.1, port 0, with aedes' in-memory persistence: sessions
 * and queued QoS 1 messages of clean=false clients survive their disconnects.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { Aedes } from 'aedes';

export interface TestBroker {
  readonly aedes: Aedes;
  readonly url: string;
  close(): Promise<void>;
}

export async function startBroker(): Promise<TestBroker> {
  const aedes = await Aedes.createBroker();
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    aedes.handle(sock);
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : 0);
    });
  });
  return {
    aedes,
    url: `mqtt://127.0.0.1:${port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}

/** Loopback ports. */
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';

const listen = (server: Server): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error('no TCP address'));
      else resolve(addr.port);
    });
  });

const close = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it). Prefer passing port 0
 * to servers you start in-process; use this for child processes that need a port up front.
 */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/** `n` distinct free ports (all held open until every one is chosen). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(servers.map(listen));
  } finally {
    await Promise.all(servers.map(close));
  }
}

/** The first port of the kernel's ephemeral range (what outgoing connections and port 0 get). */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 21_000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

const listenOn = (server: Server, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });

/**
 * `n` distinct free ports for processes that are restarted on the same port (a killed broker or
 * controller coming back). A port from `freePorts` lies in the kernel's ephemeral range, where any
 * outgoing connection may take it while the process is down: the restart then fails with
 * EADDRINUSE (seen in CI: the fault soak's controller, restarted on 127.0.0.1:37617). These come
 * from below that range, chosen at random and checked by binding; all are held until every one is.
 */
export async function restartablePorts(n: number): Promise<number[]> {
  const high = ephemeralLow();
  const low = 20_000;
  const servers: Server[] = [];
  const ports: number[] = [];
  try {
    for (let attempt = 0; ports.length < n && attempt < 200; attempt++) {
      const port = low + Math.floor(Math.random() * (high - low));
      if (ports.includes(port)) continue;
      const server = createServer();
      if (await listenOn(server, port)) {
        servers.push(server);
        ports.push(port);
      }
    }
    if (ports.length < n) throw new Error(`no ${n} free ports below ${high} after 200 attempts`);
    return ports;
  } finally {
    await Promise.all(servers.map(close));
  }
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

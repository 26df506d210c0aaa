/**
 * A broker in a process of its own for the broker benchmark (scripts/bench/broker.ts), so that its
 * CPU and memory are the broker's only. Started by lib/brokers.ts with `fork()`:
 *
 *   node --expose-gc --import tsx scripts/bench/lib/broker-child.ts --kind durable --data DIR [--certs DIR]
 *   node --expose-gc --import tsx scripts/bench/lib/broker-child.ts --kind memory
 *
 * - `durable`: the product's `createBroker` on the SQLite persistence in DIR (commit before PUBACK),
 *   ACL and limits on, a plain loopback listener with the dev-only trusted identities (`role:name`
 *   usernames) and, with --certs, the TLS 1.3 listener with client certificates as well.
 * - `memory`: plain `Aedes.createBroker()` (aedes-persistence in memory, no hooks) and a net server.
 *
 * IPC protocol: the child sends `{ op: 'ready', plainPort, tlsPort? }`; the parent sends
 * `{ op: 'mem', id }` (answered with `{ op: 'mem', id, usage }` after two full GCs) and
 * `{ op: 'close' }`. The child also closes when the IPC channel goes (parent gone).
 */
import { createServer, type Server } from 'node:net';
import { parseArgs } from 'node:util';
import { Aedes } from 'aedes';
import { createBroker } from '../../../broker/src/broker.js';

export interface ChildMem {
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
  readonly arrayBuffers: number;
}

export type ChildMessage =
  | { op: 'ready'; plainPort: number; tlsPort?: number }
  | { op: 'mem'; id: number; usage: ChildMem }
  | { op: 'error'; message: string };

export type ParentMessage = { op: 'mem'; id: number } | { op: 'close' };

const { values } = parseArgs({
  options: {
    kind: { type: 'string' },
    data: { type: 'string' },
    certs: { type: 'string' },
  },
});

function send(m: ChildMessage): void {
  process.send?.(m);
}

const gc = (globalThis as { gc?: () => void }).gc;

async function collect(): Promise<ChildMem> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setImmediate(r));
  }
  const u = process.memoryUsage();
  return { rss: u.rss, heapUsed: u.heapUsed, external: u.external, arrayBuffers: u.arrayBuffers };
}

async function startDurable(data: string, certs: string | undefined): Promise<() => Promise<void>> {
  const broker = createBroker({
    config: {
      dataDir: data,
      ...(certs && { certsDir: certs }),
      tls: { enabled: certs !== undefined, host: '127.0.0.1', port: 0, watchCrlMs: 0 },
      plain: { enabled: true, host: '127.0.0.1', port: 0, insecureTrustClientId: true },
      metrics: { host: '127.0.0.1', port: 0 },
      // Every benchmark client connects from 127.0.0.1, thousands at once.
      rateLimit: {
        perIpBurst: 100_000,
        perIpPerSec: 100_000,
        globalBurst: 100_000,
        globalPerSec: 100_000,
      },
    },
  });
  const ports = await broker.start();
  send({
    op: 'ready',
    plainPort: ports.plainPort!,
    ...(ports.tlsPort !== undefined && { tlsPort: ports.tlsPort }),
  });
  return () => broker.close();
}

async function startMemory(): Promise<() => Promise<void>> {
  const aedes = await Aedes.createBroker();
  const server: Server = createServer((socket) => aedes.handle(socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  send({ op: 'ready', plainPort: addr.port });
  return async () => {
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('broker-child.ts must be started with fork() (IPC)');
  let close: () => Promise<void>;
  if (values.kind === 'durable') {
    if (!values.data) throw new Error('--data DIR is required for --kind durable');
    close = await startDurable(values.data, values.certs);
  } else if (values.kind === 'memory') {
    close = await startMemory();
  } else {
    throw new Error(`--kind must be durable or memory, not ${String(values.kind)}`);
  }
  let closing = false;
  const stop = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    try {
      await close();
    } finally {
      process.exit(0);
    }
  };
  process.on('message', (m: ParentMessage) => {
    if (m.op === 'close') void stop();
    else if (m.op === 'mem') void collect().then((usage) => send({ op: 'mem', id: m.id, usage }));
  });
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  send({ op: 'error', message });
  process.stderr.write(`broker-child: ${message}\n`);
  process.exit(1);
});

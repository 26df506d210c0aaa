/**
 * The durable `outpost broker` (createBroker: aedes + SQLite persistence, ACL, limits) in a process
 * of its own for the fleet simulator, on FIXED ports so that it can be stopped (gracefully or with
 * SIGKILL) and started again on the same data folder while thousands of sessions wait to resume.
 * (scripts/bench/lib/broker-child.ts always takes free ports, so it cannot be restarted in place.)
 *
 *   node --import tsx scripts/sim/broker-child.ts --data DIR --plain-port N [--certs DIR --tls-port N]
 *
 * Listeners: plain TCP on 127.0.0.1 with the dev-only trusted identities (no username = agent named
 * by its client id; `role:name` usernames), and with --certs the TLS 1.3 listener with client
 * certificates. IPC: sends `{op:'ready', plainPort, tlsPort?}`, accepts `{op:'close'}`; closes when
 * the parent goes away.
 */
import { parseArgs } from 'node:util';
import { createBroker } from '../../broker/src/broker.js';

export type BrokerChildMessage =
  | { op: 'ready'; plainPort: number; tlsPort?: number }
  | { op: 'error'; message: string };

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    certs: { type: 'string' },
    'plain-port': { type: 'string' },
    'tls-port': { type: 'string' },
  },
});

async function main(): Promise<void> {
  if (!process.send) throw new Error('broker-child.ts must be started with fork() (IPC)');
  if (!values.data) throw new Error('--data DIR is required');
  const certs = values.certs;
  const broker = createBroker({
    config: {
      dataDir: values.data,
      ...(certs && { certsDir: certs }),
      tls: {
        enabled: certs !== undefined,
        host: '127.0.0.1',
        port: Number(values['tls-port'] ?? 0),
        watchCrlMs: 0,
      },
      plain: {
        enabled: true,
        host: '127.0.0.1',
        port: Number(values['plain-port'] ?? 0),
        insecureTrustClientId: true,
      },
      metrics: { enabled: false },
      // Every simulated site connects from 127.0.0.1, thousands at once.
      rateLimit: { perIpBurst: 100_000, perIpPerSec: 100_000, globalBurst: 100_000, globalPerSec: 100_000 },
    },
  });
  const ports = await broker.start();
  process.send({
    op: 'ready',
    plainPort: ports.plainPort!,
    ...(ports.tlsPort !== undefined && { tlsPort: ports.tlsPort }),
  } satisfies BrokerChildMessage);
  let closing = false;
  const stop = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(1), 15_000).unref();
    try {
      await broker.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('message', (m: { op?: string }) => {
    if (m.op === 'close') void stop();
  });
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.send?.({ op: 'error', message } satisfies BrokerChildMessage);
  process.stderr.write(`sim broker-child: ${message}\n`);
  process.exit(1);
});

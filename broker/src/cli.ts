/**
 * `outpost broker`: runs the MQTT broker until SIGTERM/SIGINT (graceful: awaits close()). SIGHUP
 * reloads the CRL, TLS files and password users without a restart. Logs are pino JSON on stdout.
 * Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 78 (EX_CONFIG) on a bad configuration,
 * 64 on bad usage.
 */
import { parseArgs } from 'node:util';
import { type Logger, pino } from 'pino';
import { type Broker, createBroker } from './broker.js';
import { configDocs, loadConfig } from './config.js';
import { isBrokerError } from './errors.js';

const USAGE = `usage: outpost broker [options]

  --config FILE          JSON or YAML config (see --help-config for every key and its env variable)
  --data DIR             durable SQLite persistence in DIR/broker.db (default: in-memory, dev only)
  --certs DIR            \`outpost certs init\` folder: broker.crt/key, ca.crt, crl.pem, users.json
  --port N, --tls-port N TLS 1.3 listener port (default 8883; 0 = any free port)
  --tls-host ADDR        TLS bind address (default 0.0.0.0)
  --no-tls               no TLS listener (then --plain-port is required)
  --plain-port N         also listen on plain TCP 127.0.0.1:N (loopback only; development)
  --insecure-trust-client-id
                         DEV/TESTS ONLY: on the plain listener accept the claimed role:name username
  --metrics-port N       Prometheus endpoint on 127.0.0.1:N (default 9464; 0 = any free port)
  --no-metrics           no metrics endpoint
  --log-level L          pino level (default info, or OUTPOST_LOG_LEVEL)
  --help-config          print the configuration table and exit

Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads CRL, TLS files and users.
`;

const EX_USAGE = 64;
const EX_CONFIG = 78;

function port(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new UsageError(`${flag} must be a port number`);
  return Number(v);
}

class UsageError extends Error {}

export interface RunOptions {
  /** Stop the broker when aborted (in-process callers; the CLI uses signals). */
  readonly signal?: AbortSignal;
  readonly log?: Logger;
  readonly out?: (s: string) => void;
  readonly err?: (s: string) => void;
}

export async function run(args: string[], io: RunOptions = {}): Promise<number> {
  const out = io.out ?? ((s) => void process.stdout.write(s));
  const err = io.err ?? ((s) => void process.stderr.write(s));
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args,
      options: {
        config: { type: 'string' },
        data: { type: 'string' },
        certs: { type: 'string' },
        port: { type: 'string' },
        'tls-port': { type: 'string' },
        'tls-host': { type: 'string' },
        'no-tls': { type: 'boolean' },
        'plain-port': { type: 'string' },
        'insecure-trust-client-id': { type: 'boolean' },
        'metrics-port': { type: 'string' },
        'no-metrics': { type: 'boolean' },
        'log-level': { type: 'string' },
        'help-config': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    err(`outpost broker: ${(e as Error).message}\n\n${USAGE}`);
    return EX_USAGE;
  }
  if (values['help']) {
    out(USAGE);
    return 0;
  }
  if (values['help-config']) {
    out(`${configDocs()}\n`);
    return 0;
  }

  let broker: Broker;
  const log =
    io.log ?? pino({ level: String(values['log-level'] ?? process.env['OUTPOST_LOG_LEVEL'] ?? 'info') });
  try {
    const tlsPort =
      port(values['tls-port'] as string | undefined, '--tls-port') ??
      port(values['port'] as string | undefined, '--port');
    const plainPort = port(values['plain-port'] as string | undefined, '--plain-port');
    const metricsPort = port(values['metrics-port'] as string | undefined, '--metrics-port');
    const overrides: Record<string, unknown> = {
      ...(values['data'] !== undefined && { dataDir: values['data'] }),
      ...(values['certs'] !== undefined && { certsDir: values['certs'] }),
      tls: {
        ...(tlsPort !== undefined && { port: tlsPort }),
        ...(values['tls-host'] !== undefined && { host: values['tls-host'] }),
        ...(values['no-tls'] && { enabled: false }),
      },
      plain: {
        ...(plainPort !== undefined && { enabled: true, port: plainPort }),
        ...(values['insecure-trust-client-id'] && { insecureTrustClientId: true }),
      },
      metrics: {
        ...(metricsPort !== undefined && { port: metricsPort }),
        ...(values['no-metrics'] && { enabled: false }),
      },
    };
    const { config, unknownEnv } = loadConfig({
      ...(values['config'] !== undefined && { file: String(values['config']) }),
      overrides,
    });
    if (unknownEnv.length > 0) log.warn({ unknownEnv }, 'unknown OUTPOST_BROKER_* variables ignored');
    broker = createBroker({ config, log });
  } catch (e) {
    if (e instanceof UsageError) {
      err(`outpost broker: ${e.message}\n\n${USAGE}`);
      return EX_USAGE;
    }
    if (isBrokerError(e)) {
      err(`outpost broker: ${e.message}\n`);
      return EX_CONFIG;
    }
    throw e;
  }

  try {
    await broker.start();
  } catch (e) {
    err(`outpost broker: cannot start: ${(e as Error).message}\n`);
    return isBrokerError(e) && (e.code === 'config' || e.code === 'tls' || e.code === 'users-file')
      ? EX_CONFIG
      : 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ why }, 'stopping');
      cleanup();
      broker.close().then(
        () => resolve(0),
        (e: unknown) => {
          log.error({ err: e }, 'error while closing');
          resolve(1);
        },
      );
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    const onHup = () => {
      broker.reload().catch((e: unknown) => log.error({ err: e }, 'reload failed (previous material kept)'));
    };
    const onAbort = () => stop('abort');
    const cleanup = () => {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      process.off('SIGHUP', onHup);
      io.signal?.removeEventListener('abort', onAbort);
    };
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    process.on('SIGHUP', onHup);
    if (io.signal?.aborted) stop('abort');
    else io.signal?.addEventListener('abort', onAbort);
  });
}

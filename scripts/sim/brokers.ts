/**
 * Brokers for the fleet simulator, each in a process of its own on FIXED loopback ports and a data
 * folder that survives a stop, so a broker can be restarted in place (reconnect storm):
 *
 * - `durable`: `outpost broker` (scripts/sim/broker-child.ts: createBroker, SQLite persistence with
 *   commit before PUBACK, ACL). Sites use its plain listener (dev-only trusted identities: client id
 *   = site id, no TLS: 10,000 TLS handshakes would measure TLS, not the broker); the controller uses
 *   its TLS 1.3 listener with the controller's client certificate, as in production.
 * - `mosquitto`: Debian's Mosquitto, `persistence true` in the data folder (written on a clean exit
 *   and every autosave_interval), anonymous plain listener, `max_queued_messages` raised from the
 *   default 1000 (DESIGN §2) so that the controller's ingest session does not drop acks.
 *
 * Reuses scripts/bench/lib/brokers.ts for free ports, the Mosquitto binary and /proc RSS.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, portOpen, prepareMosquitto, procRss, tempDir } from '../bench/lib/brokers.js';
import type { BrokerChildMessage } from './broker-child.js';
import { nodeFlags } from './proc.js';

export type SimBrokerKind = 'durable' | 'mosquitto';

export interface SimBroker {
  readonly kind: SimBrokerKind;
  /** Plain MQTT URL the simulated sites use. */
  readonly siteUrl: string;
  /** MQTT URL for the controller (mqtts:// with its client certificate on the durable broker). */
  readonly controllerUrl: string;
  /** PID of the running broker process (undefined while stopped). */
  readonly pid: number | undefined;
  /** Resident set of the broker process, bytes (0 while stopped). */
  rss(): number;
  /** Stops the broker: `graceful` (SIGTERM / close) or `kill` (SIGKILL, a crash). */
  stop(how: 'graceful' | 'kill'): Promise<void>;
  /** Starts it again on the same ports and data folder; resolves when it accepts connections. */
  start(): Promise<void>;
  /** Stops it and removes its data folder. Idempotent. */
  close(): Promise<void>;
}

export interface SimBrokerOptions {
  /** `outpost certs` folder (durable: enables the TLS listener for the controller). */
  readonly certsDir?: string;
  /** Mosquitto's max_queued_messages (default 1,000,000). */
  readonly maxQueued?: number;
}

const CHILD = join(import.meta.dirname, 'broker-child.ts');
const REPO = join(import.meta.dirname, '..', '..');

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals, gentle?: () => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  if (gentle && signal === 'SIGTERM') gentle();
  else child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await done;
  clearTimeout(timer);
}

export { portOpen };

async function startDurableChild(
  dir: string,
  plainPort: number,
  tlsPort: number,
  certsDir: string | undefined,
): Promise<ChildProcess> {
  const args = ['--data', dir, '--plain-port', String(plainPort)];
  if (certsDir) args.push('--certs', certsDir, '--tls-port', String(tlsPort));
  const child = fork(CHILD, args, {
    cwd: REPO,
    execArgv: ['--import', 'tsx', ...nodeFlags()],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('durable broker did not start within 60 s')), 60_000);
    child.on('message', (m: BrokerChildMessage) => {
      if (m.op === 'ready') {
        clearTimeout(timer);
        resolve();
      } else if (m.op === 'error') {
        clearTimeout(timer);
        reject(new Error(`durable broker failed to start: ${m.message}`));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`durable broker exited before listening (code ${code}, signal ${signal})`));
    });
  }).catch(async (err: unknown) => {
    await stopChild(child, 'SIGKILL');
    throw err;
  });
  return child;
}

async function startDurable(opts: SimBrokerOptions): Promise<SimBroker> {
  const dir = tempDir('sim-durable');
  const plainPort = await freePort();
  const tlsPort = opts.certsDir ? await freePort() : 0;
  let child: ChildProcess | undefined = await startDurableChild(dir, plainPort, tlsPort, opts.certsDir);
  let closed = false;
  const stop = async (how: 'graceful' | 'kill'): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c) return;
    await stopChild(c, how === 'kill' ? 'SIGKILL' : 'SIGTERM', () => {
      if (c.connected) c.send({ op: 'close' });
      else c.kill('SIGTERM');
    });
  };
  return {
    kind: 'durable',
    siteUrl: `mqtt://127.0.0.1:${plainPort}`,
    controllerUrl: opts.certsDir ? `mqtts://localhost:${tlsPort}` : `mqtt://127.0.0.1:${plainPort}`,
    get pid() {
      return child?.pid;
    },
    rss: () => (child?.pid ? procRss(child.pid) : 0),
    stop,
    async start() {
      if (child) throw new Error('durable broker is running');
      child = await startDurableChild(dir, plainPort, tlsPort, opts.certsDir);
    },
    async close() {
      if (closed) return;
      closed = true;
      await stop('graceful');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function startMosquitto(opts: SimBrokerOptions): Promise<SimBroker> {
  const m = await prepareMosquitto('sim-mosquitto', {
    maxQueued: opts.maxQueued ?? 1_000_000,
    timeoutMs: 30_000,
    why: 'the fleet simulator runs against it',
  });
  let child: ChildProcess | undefined = await m.launch();
  let closed = false;
  const stop = async (how: 'graceful' | 'kill'): Promise<void> => {
    const c = child;
    child = undefined;
    if (c) await stopChild(c, how === 'kill' ? 'SIGKILL' : 'SIGTERM');
  };
  return {
    kind: 'mosquitto',
    siteUrl: `mqtt://127.0.0.1:${m.port}`,
    controllerUrl: `mqtt://127.0.0.1:${m.port}`,
    get pid() {
      return child?.pid;
    },
    rss: () => (child?.pid ? procRss(child.pid) : 0),
    stop,
    async start() {
      if (child) throw new Error('mosquitto is running');
      child = await m.launch();
    },
    async close() {
      if (closed) return;
      closed = true;
      await stop('graceful');
      rmSync(m.dir, { recursive: true, force: true });
    },
  };
}

export function startSimBroker(kind: SimBrokerKind, opts: SimBrokerOptions = {}): Promise<SimBroker> {
  return kind === 'durable' ? startDurable(opts) : startMosquitto(opts);
}

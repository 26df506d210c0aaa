/**
 * The product broker alone (`outpost broker`) as a child process, for broker-level faults: a plain
 * loopback listener trusting claimed `role:name` usernames (the dev/test-only mode, so raw sockets
 * can be any identity), durable SQLite persistence, metrics on loopback. Configuration through the
 * OUTPOST_BROKER_* environment. RSS from /proc, database size from the files.
 */
import { mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { restartablePorts, type Spawned, waitFor } from '../../helpers/index.js';
import { spawnChild } from './child.js';
import { BROKER_ENV } from './system.js';

export class BrokerChild {
  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly metricsPort: number,
    readonly proc: Spawned,
  ) {}

  static async start(env: Record<string, string> = {}): Promise<BrokerChild> {
    const root = process.env['OUTPOST_FAULTS_DIR'] || process.env['OUTPOST_TEST_TMP'] || tmpdir();
    const dir = join(
      root,
      `faults-broker-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    );
    mkdirSync(dir, { recursive: true });
    const [port, metricsPort] = (await restartablePorts(2)) as [number, number];
    const proc = spawnChild(
      'cli/main.ts',
      [
        'broker',
        '--no-tls',
        '--plain-port',
        String(port),
        '--insecure-trust-client-id',
        '--data',
        dir,
        '--metrics-port',
        String(metricsPort),
      ],
      { ...BROKER_ENV, OUTPOST_LOG_LEVEL: 'info', ...env },
      { name: 'broker' },
    );
    await proc.waitForOutput('broker listening', { timeoutMs: 60_000 });
    return new BrokerChild(dir, port, metricsPort, proc);
  }

  get alive(): boolean {
    return this.proc.exitInfo === undefined;
  }

  rssKb(): number {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${this.proc.pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  }

  dbBytes(): number {
    let n = 0;
    for (const f of ['broker.db', 'broker.db-wal']) {
      try {
        n += statSync(join(this.dir, f)).size;
      } catch {
        // absent
      }
    }
    return n;
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const r = await fetch(`http://127.0.0.1:${this.metricsPort}/metrics`, {
      signal: AbortSignal.timeout(10_000),
    });
    let sum = 0;
    for (const line of (await r.text()).split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`)))
        sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  /** MQTT.js over the plain listener as `role:name` (client id = name unless given). */
  client(role: string, name: string, opts: IClientOptions = {}): Promise<MqttClient> {
    return connectAsync(`mqtt://127.0.0.1:${this.port}`, {
      username: `${role}:${name}`,
      clientId: name,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: 30,
      ...opts,
    });
  }

  /** A site subscribes to its commands, the controller publishes one: the broker still serves. */
  async stillServes(tag: string): Promise<void> {
    const site = await this.client('agent', 'site-ok');
    try {
      const got: string[] = [];
      site.on('message', (_t, p) => got.push(p.toString()));
      await site.subscribeAsync('outpost/v1/site/site-ok/cmd', { qos: 1 });
      const ctl = await this.client('controller', 'controller', { clientId: 'controller.probe' });
      try {
        await ctl.publishAsync('outpost/v1/site/site-ok/cmd', tag, { qos: 1 });
        await waitFor(() => got.includes(tag), { timeoutMs: 15_000, message: `delivery of ${tag}` });
      } finally {
        await ctl.endAsync(true);
      }
    } finally {
      await site.endAsync(true);
    }
  }

  async close(): Promise<void> {
    if (this.alive) await this.proc.kill('SIGTERM', { timeoutMs: 10_000 }).catch(() => undefined);
    if (process.env['OUTPOST_FAULTS_KEEP'] !== '1')
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

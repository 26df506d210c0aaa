/**
 * Mosquitto (Debian's package; `bash scripts/mosquitto.sh check` installs it) as a child process on
 * a free loopback port, for interop tests against a standard MQTT 3.1.1 broker (DESIGN §2, §8).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './net.js';
import { type Spawned, spawnProcess } from './process.js';
import { onCurrentTestFinished, tmpDir } from './tmp.js';

export interface MosquittoOptions {
  /**
   * Config text, or a function of the chosen port returning it. Default: `allow_anonymous true`.
   * Unless the text has its own `listener` line, `listener <port> 127.0.0.1` is put first, so
   * listener options (cafile, certfile, keyfile, require_certificate, ...) can simply follow.
   * Unless it sets `user`, `user root` is added when running as root (else Mosquitto drops to the
   * `mosquitto` user and cannot read files in private temporary directories).
   */
  conf?: string | ((port: number) => string);
  /** Port to use (default: a free one). */
  port?: number;
  /** Directory for the config file and anything the config writes (default: a new tmpDir). */
  dir?: string;
}

export interface MosquittoBroker {
  port: number;
  /** mqtt://127.0.0.1:<port> (use mqtts:// yourself for TLS listeners). */
  url: string;
  dir: string;
  confPath: string;
  process: Spawned;
  logs(): string;
  /** SIGTERM, then SIGKILL after 10 s; idempotent. */
  stop(): Promise<void>;
}

export function mosquittoBinary(): string {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto']) if (existsSync(p)) return p;
  return 'mosquitto';
}

/** Builds the config file text the helper runs (exported for tests of the helper). */
export function mosquittoConfig(conf: string, port: number, isRoot: boolean): string {
  const lines: string[] = [];
  if (isRoot && !/^\s*user\s/m.test(conf)) lines.push('user root');
  if (!/^\s*listener\s/m.test(conf)) lines.push(`listener ${port} 127.0.0.1`);
  lines.push(conf.trimEnd(), '');
  return lines.join('\n');
}

/**
 * Starts Mosquitto and resolves once it reports running (bounded, 15 s). Stopped when the current
 * test finishes; when started outside a test, call stop() in afterAll.
 */
export async function mosquitto(opts: MosquittoOptions = {}): Promise<MosquittoBroker> {
  const port = opts.port ?? (await freePort());
  const dir = opts.dir ?? tmpDir('mosquitto');
  const text = typeof opts.conf === 'function' ? opts.conf(port) : (opts.conf ?? 'allow_anonymous true');
  const confPath = join(dir, 'mosquitto.conf');
  writeFileSync(confPath, mosquittoConfig(text, port, process.getuid?.() === 0));
  const child = spawnProcess(mosquittoBinary(), ['-c', confPath], { cwd: dir, name: `mosquitto:${port}` });
  let stopped = false;
  const broker: MosquittoBroker = {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    dir,
    confPath,
    process: child,
    logs: () => child.output(),
    async stop() {
      if (stopped) return;
      stopped = true;
      await child.kill('SIGTERM', { timeoutMs: 10_000 });
    },
  };
  onCurrentTestFinished(() => broker.stop());
  try {
    await child.waitForOutput(/mosquitto version \S+ running/, { timeoutMs: 15_000 });
  } catch (e) {
    await broker.stop();
    throw e;
  }
  return broker;
}

/**
 * The three brokers the broker benchmark compares, each in a process of its own on a loopback port:
 *
 * - `durable`: `outpost broker` (createBroker: aedes 1.2 + SQLite persistence in a temp dir, ACL,
 *   limits, metrics), plain listener, optionally TLS 1.3 with client certificates as well;
 * - `memory`: aedes 1.2 with its default in-memory persistence, nothing else;
 * - `mosquitto`: Debian's Mosquitto with `persistence true` in a temp dir and queues uncapped.
 *
 * `mem()` reports the broker process's RSS and, for the Node brokers, heapUsed + external after GC.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildMem, ChildMessage, ParentMessage } from './broker-child.js';

export type BrokerKind = 'durable' | 'memory' | 'mosquitto';

export interface Mem {
  /** Resident set of the broker process, bytes. */
  readonly rss: number;
  /** heapUsed + external (Buffers) after GC, bytes; undefined for Mosquitto. */
  readonly heap?: number;
}

export interface BenchBroker {
  readonly kind: BrokerKind;
  readonly pid: number;
  readonly port: number;
  readonly tlsPort?: number;
  mem(): Promise<Mem>;
  /** Stops the process (SIGTERM, then SIGKILL after 10 s) and removes its temp dir. Idempotent. */
  close(): Promise<void>;
}

const REPO = join(import.meta.dirname, '..', '..', '..');
const CHILD = join(import.meta.dirname, 'broker-child.ts');

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `outpost-bench-${prefix}-`));
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function stopChild(child: ChildProcess, gentle?: () => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  if (gentle) gentle();
  else child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await done;
  clearTimeout(timer);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface NodeBrokerOptions {
  /** PKI from `outpost certs` (durable only): also start the TLS listener. */
  readonly certsDir?: string;
  /** Extra node flags for the broker process (e.g. `--cpu-prof`); also from BENCH_BROKER_NODE_FLAGS. */
  readonly nodeFlags?: readonly string[];
}

/** Starts `durable` or `memory` in a child process and resolves when it listens. */
export async function startNodeBroker(
  kind: 'durable' | 'memory',
  opts: NodeBrokerOptions = {},
): Promise<BenchBroker> {
  const dir = kind === 'durable' ? tempDir('durable') : undefined;
  const envFlags = (process.env['BENCH_BROKER_NODE_FLAGS'] ?? '').split(/\s+/).filter(Boolean);
  const args = [
    '--kind',
    kind,
    ...(dir ? ['--data', dir] : []),
    ...(opts.certsDir ? ['--certs', opts.certsDir] : []),
  ];
  const child = fork(CHILD, args, {
    cwd: REPO,
    execArgv: ['--expose-gc', '--import', 'tsx', ...envFlags, ...(opts.nodeFlags ?? [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<number, (m: ChildMem) => void>();
  let nextId = 1;
  child.on('message', (m: ChildMessage) => {
    if (m.op === 'mem') {
      pending.get(m.id)?.(m.usage);
      pending.delete(m.id);
    }
  });
  const cleanup = (): void => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
  let ready: { plainPort: number; tlsPort?: number };
  try {
    ready = await withTimeout(
      new Promise<{ plainPort: number; tlsPort?: number }>((resolve, reject) => {
        child.on('message', (m: ChildMessage) => {
          if (m.op === 'ready') resolve(m);
          else if (m.op === 'error') reject(new Error(`${kind} broker failed to start: ${m.message}`));
        });
        child.once('exit', (code, signal) =>
          reject(new Error(`${kind} broker exited before listening (code ${code}, signal ${signal})`)),
        );
        child.once('error', reject);
      }),
      60_000,
      `${kind} broker start`,
    );
  } catch (err) {
    await stopChild(child);
    cleanup();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    kind,
    pid: child.pid!,
    port: ready.plainPort,
    ...(ready.tlsPort !== undefined && { tlsPort: ready.tlsPort }),
    async mem() {
      const id = nextId++;
      const usage = await withTimeout(
        new Promise<ChildMem>((resolve) => {
          pending.set(id, resolve);
          child.send({ op: 'mem', id } satisfies ParentMessage);
        }),
        30_000,
        `${kind} broker memory`,
      );
      return { rss: usage.rss, heap: usage.heapUsed + usage.external };
    },
    close() {
      closed ??= stopChild(child, () => {
        if (child.connected) child.send({ op: 'close' } satisfies ParentMessage);
        else child.kill('SIGTERM');
      }).finally(cleanup);
      return closed;
    },
  };
}

export function mosquittoBinary(): string | undefined {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) {
    if (existsSync(p)) return p;
  }
  return undefined;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (addr === null || typeof addr === 'string') throw new Error('no free port');
  return addr.port;
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** VmRSS of a process from /proc, bytes. */
export function procRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/**
 * Mosquitto is spawned, not forked: unlike our node children (which exit when their IPC channel
 * closes) it would outlive a parent that exits without closing it (an uncaught error, process.exit),
 * holding its port and data folder. Kill it and remove its folder when this process exits.
 */
const spawned = new Map<ChildProcess, string>();
let exitHook = false;
function killOnExit(c: ChildProcess, dir: string): void {
  spawned.set(c, dir);
  c.once('exit', () => spawned.delete(c));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const [x, d] of spawned) {
      x.kill('SIGKILL');
      rmSync(d, { recursive: true, force: true });
    }
  });
}

/** A Mosquitto that can be started again on the same port and data (`launch()` after a stop). */
export interface MosquittoProcess {
  readonly port: number;
  readonly dir: string;
  /** Spawns it and waits until it listens (throws, with its stderr, if it does not within `timeoutMs`). */
  launch(): Promise<ChildProcess>;
}

/**
 * Mosquitto on a free loopback port: `persistence true` in a temp dir (its snapshot on exit and every
 * autosave_interval), queues capped at `maxQueued` messages and not by bytes, other settings at their
 * defaults. Killed with its folder removed if this process exits without stopping it.
 */
export async function prepareMosquitto(
  prefix: string,
  opts: { maxQueued: number; timeoutMs: number; why: string },
): Promise<MosquittoProcess> {
  const bin = mosquittoBinary();
  if (!bin) {
    throw new Error(
      `Mosquitto is not installed: ${opts.why}. Install Debian's package ` +
        '(`bash scripts/mosquitto.sh check`, or `apt-get install mosquitto`) and run it again.',
    );
  }
  const dir = tempDir(prefix);
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${dir}/`,
      `max_queued_messages ${opts.maxQueued}`,
      'max_queued_bytes 0',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  );
  return {
    port,
    dir,
    async launch() {
      const c = spawn(bin, ['-c', conf], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      killOnExit(c, dir);
      let stderr = '';
      c.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString('utf8')).slice(-4000);
      });
      const deadline = Date.now() + opts.timeoutMs;
      while (Date.now() < deadline && c.exitCode === null) {
        if (await portOpen(port)) return c;
        await new Promise((r) => setTimeout(r, 50));
      }
      await stopChild(c, () => c.kill('SIGKILL'));
      throw new Error(
        `mosquitto did not listen on 127.0.0.1:${port} within ${opts.timeoutMs} ms: ${stderr.trim()}`,
      );
    },
  };
}

/** The broker benchmark's Mosquitto: nothing may be dropped (queues effectively unbounded). */
export async function startMosquitto(): Promise<BenchBroker> {
  const m = await prepareMosquitto('mosquitto', {
    maxQueued: 100_000_000,
    timeoutMs: 15_000,
    why: 'the broker benchmark compares against it',
  });
  const cleanup = (): void => rmSync(m.dir, { recursive: true, force: true });
  let child: ChildProcess;
  try {
    child = await m.launch();
  } catch (err) {
    cleanup();
    throw err;
  }
  let closed: Promise<void> | undefined;
  return {
    kind: 'mosquitto',
    pid: child.pid!,
    port: m.port,
    async mem() {
      return { rss: procRss(child.pid!) };
    },
    close() {
      closed ??= stopChild(child).finally(cleanup);
      return closed;
    },
  };
}

export function startBroker(kind: BrokerKind, opts: NodeBrokerOptions = {}): Promise<BenchBroker> {
  return kind === 'mosquitto' ? startMosquitto() : startNodeBroker(kind, opts);
}

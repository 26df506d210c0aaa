/**
 * Starts scripts/sim/controller-child.ts and talks to it: the REST API over real HTTP (with the
 * admin token), bulk enrolment into its store, and a watch on a deployment's applied count.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ConfigInput } from '../../controller/src/config.js';
import type { ControllerReply } from './controller-child.js';
import { firstMessage, nodeFlags, Rpc, waitExit } from './proc.js';

const CHILD = join(import.meta.dirname, 'controller-child.ts');
const REPO = join(import.meta.dirname, '..', '..');

export interface ApiResult {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of our own API
  readonly body: any;
  /** Wall time of the call, ms. */
  readonly ms: number;
  /** Response body size, bytes. */
  readonly bytes: number;
}

export interface SimController {
  readonly url: string;
  readonly token: string;
  readonly pid: number;
  api(method: string, path: string, body?: unknown): Promise<ApiResult>;
  /** Bulk enrolment through the controller's store (one transaction): [site, uplink key base64]. */
  enrolDirect(sites: Iterable<[string, string]>, group: string): Promise<{ ms: number }>;
  /** Resolves when `n` commands of the deployment are applied (or at the timeout). */
  watch(
    deployment: string,
    n: number,
    timeoutMs: number,
  ): Promise<{ done: boolean; at: number; counts: Record<string, number> }>;
  stats(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

export interface SimControllerOptions {
  readonly dataDir: string;
  readonly certsDir: string;
  readonly mqttUrl: string;
  readonly signingKid: string;
  readonly config?: ConfigInput;
}

export async function startSimController(o: SimControllerOptions): Promise<SimController> {
  const token = `sim_${randomBytes(24).toString('base64url')}`;
  const child = fork(
    CHILD,
    [
      '--data',
      o.dataDir,
      '--certs',
      o.certsDir,
      '--mqtt',
      o.mqttUrl,
      '--token',
      token,
      '--signing',
      o.signingKid,
      ...(o.config ? ['--config', JSON.stringify(o.config)] : []),
    ],
    {
      cwd: REPO,
      execArgv: ['--import', 'tsx', ...nodeFlags()],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    },
  );
  let ready: { url: string };
  try {
    ready = await firstMessage<{ url: string }>(child, 'controller', (m) => m.op === 'ready', 60_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const rpc = new Rpc(child, 'controller');
  const base = `${ready.url}/v1`;
  let closed: Promise<void> | undefined;
  return {
    url: ready.url,
    token,
    pid: child.pid!,
    async api(method, path, body) {
      const t0 = performance.now();
      const res = await fetch(`${base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(120_000),
      });
      const text = await res.text();
      const ms = performance.now() - t0;
      return {
        status: res.status,
        body: text && res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text,
        ms,
        bytes: Buffer.byteLength(text),
      };
    },
    async enrolDirect(sites, group) {
      const r = await rpc.call<Extract<ControllerReply, { op: 'enrolled' }>>({
        op: 'enrol',
        sites: [...sites],
        group,
      });
      return { ms: r.ms };
    },
    async watch(deployment, n, timeoutMs) {
      const r = await rpc.call<Extract<ControllerReply, { op: 'watched' }>>(
        { op: 'watch', deployment, n, timeoutMs },
        timeoutMs + 60_000,
      );
      return { done: r.done, at: r.at, counts: r.counts };
    },
    async stats() {
      return (await rpc.call<Extract<ControllerReply, { op: 'stats' }>>({ op: 'stats' })).stats;
    },
    close() {
      closed ??= (async () => {
        if (child.connected) child.send({ op: 'close' });
        else child.kill('SIGTERM');
        await waitExit(child);
      })();
      return closed;
    },
  };
}

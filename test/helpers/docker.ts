/**
 * The private Docker engine (scripts/docker-engine.sh) for tests that need a real runtime.
 *
 * The globalSetup starts the engine once per run and records the outcome. Tests that need Docker
 * call `requireDocker()` (or `docker()`, which calls it): when the engine could not be started
 * (not root, dockerd missing, ...) that throws with the reason, so those tests fail loudly
 * instead of being skipped, while pure unit tests in the same run are unaffected.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { inject } from 'vitest';
import { type DockerOutcome, ENV, REPO_ROOT, TEST_IMAGES } from './env.js';
import { freePort } from './net.js';
import { trackPid } from './process.js';
import { onCurrentTestFinished, scratchRoot } from './tmp.js';
import { type WaitOptions, waitFor } from './wait.js';

export { TEST_IMAGES };

/** Label put on containers made through `testContainerOpts`, so a run's leftovers can be found. */
export const TEST_LABEL = 'outpost.test.run';

export function dockerOutcome(): DockerOutcome {
  let provided: DockerOutcome | undefined;
  try {
    provided = inject('outpostDocker');
  } catch {
    provided = undefined; // not inside a vitest worker
  }
  if (provided) return provided;
  const status = process.env[ENV.dockerStatus];
  return {
    status: status === 'ok' || status === 'off' ? status : 'unavailable',
    host: process.env[ENV.dockerHost] ?? '',
    error:
      process.env[ENV.dockerError] ?? 'the vitest globalSetup (test/helpers/global-setup.ts) did not run',
  };
}

/** The private engine's DOCKER_HOST (unix://…); throws a clear error when there is none. */
export function requireDocker(): string {
  const o = dockerOutcome();
  if (o.status === 'ok' && o.host) return o.host;
  if (o.status === 'off') {
    throw new Error('this test needs Docker, but OUTPOST_TEST_DOCKER=off disabled the private engine');
  }
  throw new Error(
    `this test needs the private Docker engine, which could not be started: ${o.error}\n` +
      'Start it by hand as root with `bash scripts/docker-engine.sh` (see its header), or run `npm test`.',
  );
}

/** Path of the engine's unix socket. */
export function dockerSocketPath(): string {
  return requireDocker().replace(/^unix:\/\//, '');
}

/** A dockerode client on the private engine (throws via requireDocker when unavailable). */
export function docker(): Docker {
  return new Docker({ socketPath: dockerSocketPath() });
}

/** Labels identifying this run: spread into Labels when creating containers in tests. */
export function testLabels(): Record<string, string> {
  return { [TEST_LABEL]: runId() };
}

export function runId(): string {
  try {
    const id = inject('outpostRunId');
    if (id) return id;
  } catch {
    // not inside a vitest worker
  }
  return process.env[ENV.runId] ?? 'adhoc';
}

/** Removes (forcibly, with anonymous volumes) every container carrying all the given labels. */
export async function removeContainers(d: Docker, labels: Record<string, string>): Promise<number> {
  const filters = { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
  const list = await d.listContainers({ all: true, filters: JSON.stringify(filters) });
  await Promise.all(
    list.map((c) =>
      d
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch((e: unknown) => {
          if (!isNotFound(e)) throw e;
        }),
    ),
  );
  return list.length;
}

/** Removes the containers this run labelled with `testLabels()`. */
export function removeTestContainers(d: Docker = docker()): Promise<number> {
  return removeContainers(d, testLabels());
}

export function isNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { statusCode?: unknown }).statusCode === 404;
}

/**
 * Creates and starts a container labelled for this run; removed when the current test finishes
 * (or by `removeTestContainers()` in afterAll when made outside a test).
 */
export async function runContainer(
  d: Docker,
  opts: Docker.ContainerCreateOptions,
): Promise<Docker.Container> {
  const container = await d.createContainer({
    ...opts,
    Labels: { ...opts.Labels, ...testLabels() },
  });
  onCurrentTestFinished(() =>
    container.remove({ force: true, v: true }).catch((e: unknown) => {
      if (!isNotFound(e)) throw e;
    }),
  );
  await container.start();
  return container;
}

export type HealthStatus = 'starting' | 'healthy' | 'unhealthy' | 'none';

export async function healthOf(container: Docker.Container): Promise<HealthStatus> {
  const info = await container.inspect();
  return (info.State.Health?.Status as HealthStatus | undefined) ?? 'none';
}

/** Waits (bounded, default 30 s) until the container's healthcheck reports `status`. */
export async function waitForHealth(
  container: Docker.Container,
  status: 'healthy' | 'unhealthy',
  opts: WaitOptions = {},
): Promise<void> {
  let last: HealthStatus = 'none';
  await waitFor(
    async () => {
      last = await healthOf(container);
      return last === status;
    },
    { timeoutMs: 30_000, intervalMs: 250, ...opts, message: opts.message ?? `container ${status}` },
  ).catch((e: unknown) => {
    throw new Error(`${(e as Error).message} (last health: ${last})`);
  });
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a command inside a running container (like `docker exec`) and collects its output. */
export async function execIn(
  d: Docker,
  container: Docker.Container,
  cmd: string[],
  opts: { timeoutMs?: number } = {},
): Promise<ExecResult> {
  const exec = await container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: false });
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (b: Buffer) => {
    stdout += b.toString('utf8');
  });
  err.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
  });
  d.modem.demuxStream(stream, out, err);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.destroy();
      reject(new Error(`exec ${cmd.join(' ')} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    stream.once('end', done);
    stream.once('close', done);
    stream.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  const info = await exec.inspect();
  return { exitCode: info.ExitCode ?? -1, stdout, stderr };
}

/** Pulls an image and waits for the pull to finish; rejects on a pull error. */
export async function pullImage(d: Docker, ref: string): Promise<void> {
  const stream = await d.pull(ref);
  await new Promise<void>((resolve, reject) => {
    d.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string }>) => {
      const failed = events?.find((e) => e.error);
      if (err) reject(err);
      else if (failed) reject(new Error(`pull ${ref}: ${failed.error}`));
      else resolve();
    });
  });
}

export interface LoopbackRegistry {
  /** host:port, e.g. 127.0.0.1:40123 — prefix image names with it. */
  host: string;
  dir: string;
  stop(): Promise<void>;
}

/**
 * Starts Debian's docker-registry on a free loopback port (scripts/registry.sh) and pushes
 * `images` (default: all test images) into it, then untags them locally again so that pulls
 * really fetch, e.g. `${host}/outpost-test/web:1`. Stopped when the current test finishes
 * (made outside a test: call stop() in afterAll).
 */
export async function startRegistry(
  images: readonly string[] = Object.values(TEST_IMAGES),
): Promise<LoopbackRegistry> {
  const dockerHost = requireDocker();
  const port = await freePort();
  const dir = mkdtempSync(join(scratchRoot(), 'registry-'));
  const env = { ...process.env, DOCKER_HOST: dockerHost };
  const run = (args: string[]): Promise<string> =>
    new Promise((resolve, reject) => {
      execFile(
        'bash',
        [`${REPO_ROOT}/scripts/registry.sh`, ...args],
        { env, timeout: 120_000 },
        (err, stdout, stderr) => {
          if (err)
            reject(new Error(`scripts/registry.sh ${args.join(' ')} failed: ${err.message}\n${stderr}`));
          else resolve(stdout);
        },
      );
    });
  await run(['start', '--port', String(port), '--dir', dir, '--push', ...images]);
  // The registry runs detached (setsid); record it so the run's teardown reaps it if stop() is missed.
  const pid = Number(readFileSync(join(dir, 'registry.pid'), 'utf8').trim());
  trackPid(pid);
  let stopped = false;
  const registry: LoopbackRegistry = {
    host: `127.0.0.1:${port}`,
    dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      await run(['stop', '--dir', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  onCurrentTestFinished(() => registry.stop());
  return registry;
}

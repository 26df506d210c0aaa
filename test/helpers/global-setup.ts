/**
 * vitest globalSetup (vitest.config.ts): runs once in the main process before any test file.
 *
 * - Makes the run's scratch root (tmpDir()s go below it) and a run id.
 * - Ensures the private Docker engine and test images (scripts/docker-engine.sh; fast when
 *   `npm test` already did it) and records the outcome. A failure is not fatal here: unit tests
 *   still run, and tests that need Docker fail through requireDocker() with the reason.
 *   OUTPOST_TEST_DOCKER=off skips the engine entirely.
 * - Hands everything to the workers both as environment variables (set before the forks start,
 *   which inherit them) and through `project.provide` (read with `inject`).
 *
 * Teardown SIGKILLs any child process the tests recorded and left running (pid + start time must
 * match, so a reused pid is never hit) and deletes the scratch root. The Docker engine is left
 * running for the next run; `bash scripts/docker-engine.sh stop` stops it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { type DockerOutcome, ENV, REPO_ROOT } from './env.js';

const ENGINE_TIMEOUT_MS = 5 * 60_000;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const tmpRoot = mkdtempSync(join(tmpdir(), 'outpost-test-'));
  process.env[ENV.runId] = runId;
  process.env[ENV.tmpRoot] = tmpRoot;

  const docker = await ensureDocker();
  process.env[ENV.dockerStatus] = docker.status;
  process.env[ENV.dockerError] = docker.error;
  if (docker.status === 'ok') {
    process.env[ENV.dockerHost] = docker.host;
    process.env['DOCKER_HOST'] = docker.host;
  } else if (docker.status === 'unavailable') {
    console.warn(
      `\n[global-setup] private Docker engine unavailable; Docker tests will fail:\n${docker.error}\n`,
    );
  }
  project.provide('outpostDocker', docker);
  project.provide('outpostTmpRoot', tmpRoot);
  project.provide('outpostRunId', runId);

  return async () => {
    reapRecordedChildren(tmpRoot);
    rmSync(tmpRoot, { recursive: true, force: true, maxRetries: 3 });
  };
}

async function ensureDocker(): Promise<DockerOutcome> {
  if (process.env[ENV.dockerStatus] === 'off')
    return { status: 'off', host: '', error: 'OUTPOST_TEST_DOCKER=off' };
  const preset = process.env[ENV.dockerHost];
  if (preset && (await pingDocker(preset))) {
    // scripts/test.sh already started the engine and built the images.
    return { status: 'ok', host: preset, error: '' };
  }
  const started = Date.now();
  const result = await new Promise<{ ok: boolean; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'bash',
      [join(REPO_ROOT, 'scripts', 'docker-engine.sh'), 'start'],
      { timeout: ENGINE_TIMEOUT_MS, env: process.env, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ ok: !err, stdout, stderr: err && !stderr ? err.message : stderr }),
    );
  });
  const host = /^export DOCKER_HOST=(\S+)$/m.exec(result.stdout)?.[1] ?? '';
  if (result.ok && host && (await pingDocker(host))) {
    const ms = Date.now() - started;
    if (ms > 2_000) console.log(`[global-setup] private Docker engine ready in ${ms} ms (${host})`);
    return { status: 'ok', host, error: '' };
  }
  const why = result.stderr.trim().split('\n').slice(-15).join('\n') || 'no output';
  return { status: 'unavailable', host: '', error: `scripts/docker-engine.sh start failed:\n${why}` };
}

/** GET /_ping on the engine's unix socket (no dockerode in the main process). */
function pingDocker(host: string): Promise<boolean> {
  if (!host.startsWith('unix://')) return Promise.resolve(false);
  return new Promise((resolve) => {
    const req = request(
      { socketPath: host.slice('unix://'.length), path: '/_ping', timeout: 5_000 },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** SIGKILLs children the workers recorded (test/helpers/process.ts trackPid) that still run. */
function reapRecordedChildren(tmpRoot: string): void {
  const dir = join(tmpRoot, '.pids');
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of entries) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const recorded = readFileSync(join(dir, name), 'utf8').trim();
    let current: string | undefined;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      current = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    } catch {
      continue; // already gone
    }
    if (current !== recorded) continue; // pid reused by someone else
    try {
      process.kill(pid, 'SIGKILL');
      console.warn(`[global-setup] killed leftover test child pid ${pid}`);
    } catch {
      // exited meanwhile
    }
  }
}

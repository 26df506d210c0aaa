/**
 * Names shared by the vitest globalSetup (main process) and the helpers (test workers). The
 * globalSetup sets these in process.env before the workers fork (pool 'forks' inherits them) and
 * also provides the same values through `project.provide` (read with `inject`).
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (test/helpers/../..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const ENV = {
  /** 'ok' when the private Docker engine answered in globalSetup, else 'unavailable' or 'off'. */
  dockerStatus: 'OUTPOST_TEST_DOCKER',
  /** Why the engine is unavailable (the tail of scripts/docker-engine.sh's output). */
  dockerError: 'OUTPOST_TEST_DOCKER_ERROR',
  /** unix:///…/docker.sock of the private engine (DOCKER_HOST is set to the same). */
  dockerHost: 'OUTPOST_TEST_DOCKER_HOST',
  /** Per-run scratch root: tmpDir()s live below it; globalSetup's teardown deletes it. */
  tmpRoot: 'OUTPOST_TEST_TMP',
  /** Unique id of this vitest run (labels, names). */
  runId: 'OUTPOST_TEST_RUN_ID',
} as const;

export interface DockerOutcome {
  status: 'ok' | 'unavailable' | 'off';
  host: string;
  error: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    outpostDocker: DockerOutcome;
    outpostTmpRoot: string;
    outpostRunId: string;
  }
}

/** The images scripts/docker-engine.sh builds (see its header). */
export const TEST_IMAGES = {
  busybox: 'outpost-test/busybox:1',
  web1: 'outpost-test/web:1',
  web2: 'outpost-test/web:2',
  broken: 'outpost-test/broken:1',
} as const;

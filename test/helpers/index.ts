/**
 * Test helpers for every suite. Import from here:
 *   import { tmpDir, freePort, waitFor, spawnNode, docker, mosquitto, createFaultProxy } from '../helpers/index.js';
 *
 * Things made inside a test (tmp dirs, children, containers via runContainer, brokers, proxies,
 * registries) are cleaned up when the test finishes; things made in beforeAll need an explicit
 * stop/close/killAll/cleanupTmpDirs/removeTestContainers in afterAll (the run's teardown is the
 * backstop for directories and child processes).
 */

export type { ExecResult, HealthStatus, LoopbackRegistry } from './docker.js';
export {
  docker,
  dockerOutcome,
  dockerSocketPath,
  execIn,
  healthOf,
  isNotFound,
  pullImage,
  removeContainers,
  removeTestContainers,
  requireDocker,
  runContainer,
  runId,
  startRegistry,
  TEST_LABEL,
  testLabels,
  waitForHealth,
} from './docker.js';
export type { DockerOutcome } from './env.js';
export { ENV, REPO_ROOT, TEST_IMAGES } from './env.js';
export type {
  Direction,
  DirectionStats,
  FaultProxy,
  FaultProxyOptions,
  FaultProxyStats,
} from './fault-proxy.js';
export { createFaultProxy } from './fault-proxy.js';
export type { MosquittoBroker, MosquittoOptions } from './mosquitto.js';
export { mosquitto, mosquittoBinary, mosquittoConfig } from './mosquitto.js';
export { freePort, freePorts, portOpen, restartablePorts } from './net.js';
export type { ExitInfo, Spawned, SpawnOptions } from './process.js';
export {
  describeExit,
  killAll,
  runningChildren,
  spawnNode,
  spawnProcess,
  tail,
  trackPid,
} from './process.js';
export { cleanupTmpDirs, onCurrentTestFinished, scratchRoot, tmpDir } from './tmp.js';
export type { WaitOptions } from './wait.js';
export { sleep, waitFor, withTimeout } from './wait.js';

/**
 * Update locks with the real engine ([MW-5], [MW-6]): the Docker runtime mounts the stack's lock
 * folder at /run/outpost in its containers; an application that takes the lock (touch
 * /run/outpost/updates.lock) defers the next update (`deferred`/`update-lock`); when it lets go, the
 * update is applied. Private Docker engine, real broker, real SQLite.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { createDockerRuntime } from '../../agent/src/runtime/docker.js';
import { LABELS } from '../../agent/src/runtime/types.js';
import type { StackSpec } from '../../protocol/src/index.js';
import { docker, removeContainers, requireDocker, TEST_IMAGES, waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let siteId: string;
let running: RunningAgent | undefined;

beforeEach(async () => {
  requireDocker();
  siteId = `lock-${Math.random().toString(36).slice(2, 8)}`;
  broker = await startTestBroker();
  site = makeSite(siteId);
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
  await removeContainers(docker(), { [LABELS.site]: siteId });
});

const [img = '', tag = ''] = TEST_IMAGES.busybox.split(':');
/** The application takes the update lock when it starts (busybox as PID 1: trap TERM for fast stops). */
const app = (rev: number): StackSpec => ({
  svc: {
    app: {
      img,
      tag,
      env: { REV: String(rev) },
      cmd: ['sh', '-c', 'touch /run/outpost/updates.lock; trap "exit 0" TERM; while :; do sleep 1; done'],
    },
  },
});

async function revRunning(): Promise<string | undefined> {
  const [c] = await docker().listContainers({
    filters: { label: [`${LABELS.site}=${siteId}`, `${LABELS.stack}=plant`], status: ['running'] },
  });
  return c?.Labels[LABELS.rev];
}

test('a container takes the lock through /run/outpost; the update is deferred until it lets go', async () => {
  const config = site.config({ broker: broker.url });
  const runtime = createDockerRuntime({
    docker: docker(),
    site: siteId,
    log: pino({ level: 'silent' }),
    policy: { allowTags: true },
    stopTimeoutSec: 2,
    gatePollMs: 200,
    settleMs: 500,
    reconcileDebounceMs: 100,
    locksDir: config.locksDir,
  });
  running = await startAgent(
    site,
    {
      broker: broker.url,
      allowTags: true,
      lockPollMs: 200,
      healthRunningForMs: 1000,
      healthDeadlineMs: 60_000,
    },
    { runtime },
  );
  await waitFor(() => running?.agent.status().connected, { message: 'agent connected' });

  await ctl.apply('plant', 1, app(1));
  await ctl.waitStatus(1, 'applied', 60_000);
  // The application took the lock: the file is in the stack's lock folder on the host.
  const lock = join(config.locksDir, 'plant', 'updates.lock');
  await waitFor(() => existsSync(lock), { timeoutMs: 20_000, message: 'lock taken by the container' });

  await ctl.apply('plant', 2, app(2));
  const d = await ctl.waitStatus(2, 'deferred', 20_000);
  expect(d.rc).toBe('update-lock');
  expect(await revRunning()).toBe('1');
  const st = await waitFor(() => ctl.statuses.findLast((s) => s.alarms?.some((a) => a.code === 'deferred')));
  expect(st.alarms?.find((a) => a.code === 'deferred')).toMatchObject({ stack: 'plant' });

  // The application lets go (inside its container, through the read-write mount).
  const [c] = await docker().listContainers({
    filters: { label: [`${LABELS.site}=${siteId}`, `${LABELS.stack}=plant`] },
  });
  const exec = await docker()
    .getContainer(c!.Id)
    .exec({ Cmd: ['rm', '-f', '/run/outpost/updates.lock'], AttachStdout: false, AttachStderr: false });
  await exec.start({ Detach: true });
  await waitFor(() => !existsSync(lock), { timeoutMs: 20_000, message: 'lock released' });

  await ctl.waitStatus(2, 'applied', 60_000);
  expect(await revRunning()).toBe('2');
  expect(ctl.acksFor(2).map((a) => a.st)).toEqual(['accepted', 'deferred', 'applied']);
  // rev 2's container takes the lock again when it starts: the next update would wait for it.
  await waitFor(() => existsSync(lock), { timeoutMs: 20_000, message: 'lock taken again' });
}, 180_000);

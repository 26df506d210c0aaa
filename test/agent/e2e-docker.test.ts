/**
 * The real thing end to end: `outpost agent` (CLI dispatcher, DockerRuntime on the private engine,
 * config from OUTPOST_AGENT_* variables) in a child process, a real broker, signed commands.
 * Deploys a stack, then survives a power loss and a reboot with no network (I7): the reconciler brings
 * the stack back from the local database. `outpost agent status` shows it offline.
 */
import { join } from 'node:path';
import { afterEach, beforeEach, expect, test } from 'vitest';
import { LABELS } from '../../agent/src/runtime/types.js';
import type { StackSpec } from '../../protocol/src/index.js';
import {
  docker,
  dockerSocketPath,
  freePort,
  removeContainers,
  requireDocker,
  type Spawned,
  spawnNode,
  TEST_IMAGES,
  waitFor,
} from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { TestController } from './helpers/controller.js';
import { makeSite, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let siteId: string;

beforeEach(async () => {
  requireDocker();
  siteId = `e2e-${Math.random().toString(36).slice(2, 8)}`;
  broker = await startTestBroker();
  site = makeSite(siteId);
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
});

afterEach(async () => {
  await ctl.close();
  await broker.close();
  await removeContainers(docker(), { [LABELS.site]: siteId });
});

function agentCli(brokerUrl: string): Spawned {
  return spawnNode(
    'test/agent/helpers/outpost.ts',
    [
      'agent',
      '--site',
      siteId,
      '--broker',
      brokerUrl,
      '--certs',
      site.pki.certsDir,
      '--data',
      join(site.dir, 'data'),
    ],
    {
      OUTPOST_AGENT_DOCKER_SOCKET: dockerSocketPath(),
      OUTPOST_AGENT_ALLOW_TAGS: 'true',
      OUTPOST_AGENT_SETTLE_MS: '100',
      OUTPOST_AGENT_STATE_MIN_INTERVAL_MS: '100',
      OUTPOST_AGENT_HEALTH_RUNNING_FOR_MS: '1000',
      OUTPOST_AGENT_HEALTH_DEADLINE_MS: '30000',
      OUTPOST_AGENT_RECONNECT_MIN_MS: '100',
      OUTPOST_AGENT_RECONNECT_MAX_MS: '500',
      OUTPOST_AGENT_LOG_LEVEL: 'info',
    },
  );
}

const [img = '', tag = ''] = TEST_IMAGES.busybox.split(':');
const stack: StackSpec = {
  svc: {
    loop: {
      img,
      tag,
      cmd: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'],
      rst: 'unless-stopped',
    },
  },
};

async function running(): Promise<string[]> {
  const list = await docker().listContainers({ all: true, filters: { label: [`${LABELS.site}=${siteId}`] } });
  return list.filter((c) => c.State === 'running').map((c) => c.Labels[LABELS.service] ?? '?');
}

test('outpost agent with Docker: deploy, power loss, reboot without network -> the stack comes back', async () => {
  const first = agentCli(broker.url);
  await first.waitForOutput('"msg":"subscribed"', { timeoutMs: 30_000 });
  await ctl.apply('plant', 1, stack);
  await ctl.waitStatus(1, 'applied', 60_000);
  expect(await running()).toEqual(['loop']);
  await waitFor(
    () =>
      ctl.states.some((s) => s.stacks.some((x) => x.name === 'plant' && x.rev === 1 && x.h === 'healthy')),
    {
      timeoutMs: 20_000,
      message: 'healthy state reported',
    },
  );

  // power loss: the agent dies and the containers stop with the device
  await first.kill('SIGKILL');
  const ids = await docker().listContainers({ filters: { label: [`${LABELS.site}=${siteId}`] } });
  await Promise.all(ids.map((c) => docker().getContainer(c.Id).stop({ t: 1 })));
  expect(await running()).toEqual([]);

  // reboot with no broker reachable
  const second = agentCli(`mqtt://127.0.0.1:${await freePort()}`);
  await second.waitForOutput('"msg":"agent started"', { timeoutMs: 30_000 });
  await waitFor(async () => (await running()).length === 1, {
    timeoutMs: 30_000,
    message: 'stack restarted offline',
  });
  expect(second.output()).not.toContain('"msg":"connected"');
  expect((await second.kill('SIGTERM')).code).toBe(0);

  const status = spawnNode('test/agent/helpers/outpost.ts', [
    'agent',
    'status',
    '--data',
    join(site.dir, 'data'),
  ]);
  expect((await status.exited).code).toBe(0);
  expect(status.stdout()).toMatch(/plant\s+1\s+1\s+/);
}, 180_000);

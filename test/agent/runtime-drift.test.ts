/**
 * The reconciler against the private engine (I7: restarts crashed services, reverts local drift,
 * never applies an empty or unknown target; serialised with apply).
 */
import { randomBytes } from 'node:crypto';
import type Dockerode from 'dockerode';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createDockerRuntime, type DockerRuntime } from '../../agent/src/runtime/docker.js';
import { serviceHash } from '../../agent/src/runtime/hash.js';
import { type DesiredStack, LABELS } from '../../agent/src/runtime/types.js';
import type { Service, StackState } from '../../protocol/src/index.js';
import { docker, sleep, TEST_IMAGES, waitFor } from '../helpers/index.js';

const log = pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' });
const SLOW = 120_000;
const gate = { deadlineMs: 30_000, runningForMs: 1_000 };
const web = (image: string): Service => {
  const [img = '', tag = ''] = image.split(':');
  return { img, tag };
};
const plain: Service = {
  img: 'outpost-test/busybox',
  tag: '1',
  cmd: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'],
};
const t = (name: string, rev: number, svc: Record<string, Service>): DesiredStack => ({
  name,
  rev,
  spec: { svc },
  digest: `${name}-${rev}`,
});

const d = docker();
const sites: string[] = [];
const runtimes: DockerRuntime[] = [];

function makeRuntime(site: string, periodMs = 2_000): DockerRuntime {
  const rt = createDockerRuntime({
    docker: d,
    site,
    log,
    policy: { allowTags: true },
    registryMirror: '127.0.0.1:9',
    stopTimeoutSec: 2,
    gatePollMs: 200,
    settleMs: 1_000,
    reconcilePeriodMs: periodMs,
    reconcileDebounceMs: 100,
  });
  runtimes.push(rt);
  return rt;
}

function newSite(): string {
  const s = `dr-${randomBytes(4).toString('hex')}`;
  sites.push(s);
  return s;
}

afterAll(async () => {
  for (const rt of runtimes) await rt.close();
  for (const site of sites) {
    for (const c of await d.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } })) {
      await d.getContainer(c.Id).remove({ force: true });
    }
  }
  for (const n of foreign)
    await d
      .getContainer(n)
      .remove({ force: true })
      .catch(() => undefined);
});
const foreign: string[] = [];

async function one(
  site: string,
  stack: string,
  service: string,
): Promise<Dockerode.ContainerInfo | undefined> {
  const label = [`${LABELS.site}=${site}`, `${LABELS.stack}=${stack}`, `${LABELS.service}=${service}`];
  const list = await d.listContainers({ all: true, filters: { label } });
  return list.length === 1 ? list[0] : undefined;
}

async function imageId(ref: string): Promise<string> {
  return (await d.getImage(ref).inspect()).Id;
}

describe('DockerRuntime reconciler (I7)', () => {
  it('restores containers removed, stopped, killed or replaced by hand; leaves foreign ones alone', {
    timeout: SLOW,
  }, async () => {
    const site = newSite();
    const rt = makeRuntime(site);
    const target = t('line', 1, { web: web(TEST_IMAGES.web1), side: plain });
    expect(await rt.apply(target, undefined, gate)).toEqual({ status: 'applied' });
    const changes: StackState[][] = [];
    await rt.startReconciler(
      () => [target],
      (s) => changes.push(s),
    );
    const web1 = await imageId(TEST_IMAGES.web1);
    const healthyWeb = async (notId?: string) => {
      const c = await one(site, 'line', 'web');
      return c && c.State === 'running' && c.ImageID === web1 && c.Id !== notId ? c : undefined;
    };

    // Removed by hand → re-created.
    const first = (await one(site, 'line', 'web')) as Dockerode.ContainerInfo;
    await d.getContainer(first.Id).remove({ force: true });
    const second = await waitFor(() => healthyWeb(first.Id), {
      timeoutMs: 20_000,
      message: 'web re-created',
    });

    // Stopped by hand → started again (same container).
    await d.getContainer(second.Id).stop({ t: 2 });
    await waitFor(async () => (await healthyWeb())?.Id === second.Id, {
      timeoutMs: 20_000,
      message: 'web started',
    });

    // Killed (a crash) → running again.
    await d.getContainer(second.Id).kill();
    await waitFor(async () => (await healthyWeb())?.Id === second.Id, {
      timeoutMs: 20_000,
      message: 'web back after kill',
    });

    // Replaced by hand with another image, our labels copied → replaced back.
    await d.getContainer(second.Id).remove({ force: true });
    const fake = await d.createContainer({
      name: 'outpost_line_web',
      Image: TEST_IMAGES.web2,
      Labels: second.Labels,
      HostConfig: { NetworkMode: 'none' },
    });
    await fake.start();
    const third = await waitFor(() => healthyWeb(fake.id), {
      timeoutMs: 20_000,
      message: 'web replaced back',
    });
    expect(third.Labels[LABELS.hash]).toBe(serviceHash('line', 'web', web(TEST_IMAGES.web1)));
    await expect(d.getContainer(fake.id).inspect()).rejects.toMatchObject({ statusCode: 404 });

    // Removed, and its name taken by a container that is not ours → ours comes back under another
    // name; the foreign one is never touched.
    await d.getContainer(third.Id).remove({ force: true });
    const squatter = await d.createContainer({
      name: 'outpost_line_web',
      Image: TEST_IMAGES.busybox,
      Cmd: ['true'],
    });
    foreign.push(squatter.id);
    const fourth = await waitFor(() => healthyWeb(), {
      timeoutMs: 20_000,
      message: 'web under another name',
    });
    expect(fourth.Names[0]).toMatch(/^\/outpost_line_web_[0-9a-f]{12}$/);
    expect((await squatter.inspect()).Name).toBe('/outpost_line_web');

    await waitFor(() => changes.at(-1)?.find((s) => s.name === 'line')?.h === 'healthy', {
      timeoutMs: 20_000,
      message: 'onChange reports the stack healthy',
    });
    expect(
      (await d.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } })).length,
    ).toBe(2);
  });

  it('never applies an empty or unknown target: stacks not in desired() are left alone', {
    timeout: SLOW,
  }, async () => {
    const site = newSite();
    const deployer = makeRuntime(site);
    const target = t('idle', 1, { side: plain });
    expect(await deployer.apply(target, undefined, gate)).toEqual({ status: 'applied' });
    await deployer.close();

    // A fresh runtime (as after an agent restart) that knows of no desired stack.
    let desired: DesiredStack[] = [];
    const rt = makeRuntime(site);
    const changes: StackState[][] = [];
    await rt.startReconciler(
      () => desired,
      (s) => changes.push(s),
    );
    const c = (await one(site, 'idle', 'side')) as Dockerode.ContainerInfo;
    await d.getContainer(c.Id).stop({ t: 2 });
    await sleep(5_000); // two full periods
    expect((await one(site, 'idle', 'side'))?.State).toBe('exited');
    expect(changes.at(-1)?.find((s) => s.name === 'idle')).toMatchObject({ rev: 1, h: 'stopped' });

    desired = [target];
    await waitFor(async () => (await one(site, 'idle', 'side'))?.State === 'running', {
      timeoutMs: 15_000,
      message: 'started once desired names it',
    });
  });

  it('never fights an apply in progress, nor reverts it before desired() catches up', {
    timeout: SLOW,
  }, async () => {
    const site = newSite();
    const rt = makeRuntime(site, 1_000);
    const r1 = t('roll', 1, { web: web(TEST_IMAGES.web1) });
    const r2 = t('roll', 2, { web: web(TEST_IMAGES.web2) });
    const r3 = t('roll', 3, { web: web(TEST_IMAGES.broken) });
    expect(await rt.apply(r1, undefined, gate)).toEqual({ status: 'applied' });
    let desired = [r1];
    await rt.startReconciler(
      () => desired,
      () => undefined,
    );
    expect(await rt.apply(r2, r1, gate)).toEqual({ status: 'applied' });
    await sleep(3_000); // several passes while desired() still says r1
    expect(await rt.inEffect(r2)).toBe(true);
    desired = [r2];

    // The core moves desired() first, then applies a broken revision: the loop waits for the apply,
    // and after the rollback it keeps r2 rather than re-deploying r3 without a gate.
    desired = [r3];
    const out = await rt.apply(r3, r2, { deadlineMs: 6_000, runningForMs: 1_000 });
    expect(out).toMatchObject({ status: 'rolled-back', restoredRev: 2 });
    await sleep(3_000);
    expect(await rt.inEffect(r2)).toBe(true);
    expect(
      (await d.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } })).length,
    ).toBe(1);
  });

  it('re-opens the engine events stream when it ends, and catches up with what it missed', {
    timeout: SLOW,
  }, async () => {
    const site = newSite();
    const rt = makeRuntime(site, 600_000); // no periodic pass within the test: only events and catch-up
    const target = t('wire', 1, { side: plain });
    expect(await rt.apply(target, undefined, gate)).toEqual({ status: 'applied' });
    await rt.startReconciler(
      () => [target],
      () => undefined,
    );
    const rec = rt['reconciler'] as unknown as { stream?: { destroy(): void } };
    rec.stream?.destroy();
    const c = (await one(site, 'wire', 'side')) as Dockerode.ContainerInfo;
    await d.getContainer(c.Id).remove({ force: true });
    await waitFor(async () => (await one(site, 'wire', 'side'))?.State === 'running', {
      timeoutMs: 20_000,
      message: 'side re-created after the stream came back',
    });
  });
});

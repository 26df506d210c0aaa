/**
 * DockerRuntime against the private engine (scripts/docker-engine.sh): the conformance suite, then
 * Docker specifics — rollout and automatic rollback with the test images, digest pinning through a
 * loopback registry mirror, no re-pull of a present image, crash-resumed apply (I2), ports, volumes
 * and limits. Drift and the reconciler: runtime-drift.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type Dockerode from 'dockerode';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDockerRuntime, type DockerRuntime } from '../../agent/src/runtime/docker.js';
import { execute } from '../../agent/src/runtime/executors.js';
import { Images } from '../../agent/src/runtime/images.js';
import { observeStack } from '../../agent/src/runtime/observe.js';
import { plan } from '../../agent/src/runtime/plan.js';
import { type DesiredStack, LABELS, type RuntimePolicy } from '../../agent/src/runtime/types.js';
import type { Service } from '../../protocol/src/index.js';
import { docker, execIn, isNotFound, startRegistry, TEST_IMAGES } from '../helpers/index.js';
import { type ConformanceHarness, runtimeConformance, type ServiceKind } from './runtime-conformance.js';

const log = pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' });
/** Nothing listens on port 9 (discard): any pull through this mirror fails at once. */
const DEAD_MIRROR = '127.0.0.1:9';
const SLOW = 120_000;

const newSite = () => `rt-${randomBytes(4).toString('hex')}`;

function services(kind: ServiceKind): Service {
  const [img = '', tag = ''] = {
    v1: TEST_IMAGES.web1,
    v2: TEST_IMAGES.web2,
    broken: TEST_IMAGES.broken,
    plain: TEST_IMAGES.busybox,
    missing: 'outpost-test/absent:1',
  }[kind].split(':');
  // busybox as PID 1 ignores SIGTERM: an explicit trap keeps stops fast.
  if (kind === 'plain')
    return { img, tag, cmd: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'] };
  return { img, tag };
}

function makeRuntime(d: Dockerode, site: string, policy: RuntimePolicy, mirror = DEAD_MIRROR): DockerRuntime {
  return createDockerRuntime({
    docker: d,
    site,
    log,
    policy,
    registryMirror: mirror,
    stopTimeoutSec: 2,
    gatePollMs: 200,
    settleMs: 1_000,
    reconcileDebounceMs: 100,
  });
}

/** Removes everything labelled for `site` (containers, then volumes). */
async function purgeSite(d: Dockerode, site: string): Promise<void> {
  const label = [`${LABELS.site}=${site}`];
  for (const c of await d.listContainers({ all: true, filters: { label } })) {
    await d
      .getContainer(c.Id)
      .remove({ force: true })
      .catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
  }
  const vols = await d.listVolumes({ filters: { label } });
  for (const v of vols.Volumes ?? [])
    await d
      .getVolume(v.Name)
      .remove()
      .catch(() => undefined);
}

async function containersOf(d: Dockerode, site: string, stack: string, service?: string) {
  const label = [`${LABELS.site}=${site}`, `${LABELS.stack}=${stack}`];
  if (service) label.push(`${LABELS.service}=${service}`);
  return d.listContainers({ all: true, filters: { label } });
}

runtimeConformance('DockerRuntime', async ({ allowTags }): Promise<ConformanceHarness> => {
  const d = docker();
  const site = newSite();
  const runtime = makeRuntime(d, site, { allowTags });
  return {
    runtime,
    service: services,
    gate: { deadlineMs: 30_000, runningForMs: 1_000 },
    failGate: { deadlineMs: 6_000, runningForMs: 1_000 },
    async startedAt(stack, service) {
      const [c] = await containersOf(d, site, stack, service);
      if (!c) return undefined;
      return Date.parse((await d.getContainer(c.Id).inspect()).State.StartedAt);
    },
    units: async (stack) => (await containersOf(d, site, stack)).length,
    async close() {
      await runtime.close();
      await purgeSite(d, site);
    },
  };
});

describe('DockerRuntime on the engine', () => {
  const d = docker();
  const site = newSite();
  let rt: DockerRuntime;
  const t = (name: string, rev: number, svc: Record<string, Service>, vol?: string[]): DesiredStack => ({
    name,
    rev,
    spec: vol ? { svc, vol } : { svc },
    digest: `${name}-${rev}`,
  });
  const gate = { deadlineMs: 30_000, runningForMs: 1_000 };
  const web = (version: '1' | '2' | 'broken') =>
    version === 'broken' ? services('broken') : services(version === '1' ? 'v1' : 'v2');

  beforeAll(() => {
    rt = makeRuntime(d, site, { allowTags: true });
  });
  afterAll(async () => {
    await rt.close();
    await purgeSite(d, site);
  });

  async function served(stack: string, service: string, path: string): Promise<string> {
    const [c] = await containersOf(d, site, stack, service);
    if (!c) throw new Error(`no container for ${stack}/${service}`);
    const r = await execIn(d, d.getContainer(c.Id), ['wget', '-q', '-O-', `http://127.0.0.1:8080${path}`]);
    return r.stdout.trim();
  }

  it('deploys web:1, updates to web:2, then broken:1 rolls back to rev 2 by itself (I7)', {
    timeout: SLOW,
  }, async () => {
    const r1 = t('plant', 1, { web: web('1') });
    const r2 = t('plant', 2, { web: web('2') });
    const r3 = t('plant', 3, { web: web('broken') });
    expect(await rt.apply(r1, undefined, gate)).toEqual({ status: 'applied' });
    expect(await served('plant', 'web', '/version')).toBe('1');
    const [c1] = await containersOf(d, site, 'plant');
    expect(c1?.Names[0]).toBe('/outpost_plant_web');
    expect(c1?.Labels).toMatchObject({ [LABELS.rev]: '1', [LABELS.managed]: 'true', [LABELS.site]: site });

    expect(await rt.apply(r2, r1, gate)).toEqual({ status: 'applied' });
    expect(await served('plant', 'web', '/version')).toBe('2');

    const out = await rt.apply(r3, r2, { deadlineMs: 6_000, runningForMs: 1_000 });
    expect(out).toMatchObject({ status: 'rolled-back', reason: 'health-timeout', restoredRev: 2 });
    expect(out.status === 'rolled-back' && out.detail).toMatch(/web: (unhealthy|starting)/);
    expect(await served('plant', 'web', '/version')).toBe('2');
    const after = await containersOf(d, site, 'plant');
    expect(after).toHaveLength(1);
    expect(after[0]?.Labels[LABELS.rev]).toBe('2');
    expect((await rt.snapshot()).find((s) => s.name === 'plant')).toMatchObject({ rev: 2 });
  });

  it('never re-pulls a present image: applies with the mirror unreachable, and the engine saw no pull', {
    timeout: SLOW,
  }, async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const r1 = t('nopull', 1, { a: web('1'), b: web('2') });
    expect(await rt.apply(r1, undefined, gate)).toEqual({ status: 'applied' });
    await rt.remove('nopull', { volumes: false });
    expect(await rt.apply({ ...r1, rev: 2 }, undefined, gate)).toEqual({ status: 'applied' });
    const until = Math.ceil(Date.now() / 1000) + 1;
    const stream = (await d.getEvents({
      since,
      until,
      filters: { type: ['image'], event: ['pull'] },
    })) as NodeJS.ReadableStream;
    let text = '';
    for await (const chunk of stream) text += chunk.toString();
    // The engine is shared with other suites: only pulls of what this stack uses count.
    const ours = new Set<string>([TEST_IMAGES.web1, TEST_IMAGES.web2]);
    const pulls = text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => (JSON.parse(l) as { id?: string }).id ?? '')
      .filter((id) => ours.has(id) || id.startsWith(`${DEAD_MIRROR}/`));
    expect(pulls).toEqual([]);
  });

  it('pulls a digest-pinned image through the site registry mirror, then runs it offline', {
    timeout: SLOW,
  }, async () => {
    const reg = await startRegistry([TEST_IMAGES.web2]);
    const digest = await manifestDigest(reg.host, 'outpost-test/web', '2');
    const pinned: Service = {
      img: 'registry.acme.example/outpost-test/web',
      dig: Buffer.from(digest, 'hex'),
    };
    const strict = makeRuntime(d, site, { allowTags: false }, reg.host);
    const pulledRef = `${reg.host}/outpost-test/web@sha256:${digest}`;
    try {
      const r1 = t('pinned', 1, { web: pinned });
      expect(await strict.apply(r1, undefined, gate)).toEqual({ status: 'applied' });
      const info = await d.getImage(pulledRef).inspect();
      expect(info.RepoDigests).toContain(pulledRef);
      expect(await served('pinned', 'web', '/version')).toBe('2');
      // Offline: the mirror is gone; re-creating the container uses the present image.
      await reg.stop();
      await strict.remove('pinned', { volumes: false });
      expect(await strict.apply({ ...r1, rev: 2 }, undefined, gate)).toEqual({ status: 'applied' });
      // A digest nobody has: image-unavailable, nothing touched.
      const other = t('pinned', 3, { web: { ...pinned, dig: new Uint8Array(32).fill(1) } });
      expect(await strict.apply(other, r1, gate)).toMatchObject({
        status: 'failed',
        reason: 'image-unavailable',
      });
      expect(await strict.inEffect({ ...r1, rev: 2 })).toBe(true);
    } finally {
      await strict.remove('pinned', { volumes: false });
      await strict.close();
      await d
        .getImage(pulledRef)
        .remove()
        .catch(() => undefined);
    }
  });

  it('resumes an apply interrupted by a crash: exactly one container per service (I2)', {
    timeout: SLOW,
  }, async () => {
    const target = t('resume', 1, { a: web('1'), b: web('2'), c: services('plain') });
    const ctx = {
      docker: d,
      site,
      log,
      images: new Images(d, log, DEAD_MIRROR, 10_000),
      canPublish: async () => false,
      stopTimeoutSec: 2,
    };
    // "Crash" after creating a (not started) and before touching b and c.
    const steps = plan(await observeStack(d, ctx.images, site, 'resume', target), target);
    const firstStart = steps.findIndex((s) => s.kind === 'startContainer');
    for (const s of steps.slice(0, firstStart)) await execute(ctx, s);
    expect((await containersOf(d, site, 'resume')).map((c) => c.State)).toEqual(['created']);

    expect(await rt.apply(target, undefined, gate)).toEqual({ status: 'applied' });
    expect(await rt.apply(target, undefined, gate)).toEqual({ status: 'applied' });
    const all = await containersOf(d, site, 'resume');
    expect(all.map((c) => c.Labels[LABELS.service]).sort()).toEqual(['a', 'b', 'c']);
    expect(all.every((c) => c.State === 'running')).toBe(true);
  });

  it('bad input to apply, remove, restart and inEffect is refused, typed, and changes nothing (I9)', async () => {
    const ok = t('typed', 1, { web: web('1') });
    const before = await d.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } });
    expect(await rt.apply(ok, undefined, { deadlineMs: Number.NaN, runningForMs: 0 })).toMatchObject({
      status: 'failed',
      reason: 'malformed',
    });
    expect(await rt.apply(undefined as unknown as DesiredStack, undefined, gate)).toMatchObject({
      reason: 'malformed',
    });
    await expect(rt.remove('../etc', { volumes: true })).rejects.toMatchObject({ code: 'malformed' });
    await expect(rt.restart('typed', [], Number.NaN)).rejects.toMatchObject({ code: 'malformed' });
    expect(await rt.inEffect({ ...ok, spec: { svc: {} } })).toBe(false);
    const after = await d.listContainers({ all: true, filters: { label: [`${LABELS.site}=${site}`] } });
    expect(after.map((c) => c.Id).sort()).toEqual(before.map((c) => c.Id).sort());
  });

  it('maps limits, volumes, env and ports; tolerates an engine that cannot publish', {
    timeout: SLOW,
  }, async () => {
    const svc: Service = {
      ...web('1'),
      env: { PORT: '8080', MODE: 'test' },
      mem: 64 * 1024 * 1024,
      cpu: 500,
      vols: ['data:/data'],
      ports: ['18080:8080'],
      rst: 'on-failure',
    };
    const r1 = t(
      'shape',
      1,
      { web: svc, side: { ...services('plain'), net: 'none', vols: ['data:/data:ro'] } },
      ['data'],
    );
    expect(await rt.apply(r1, undefined, gate)).toEqual({ status: 'applied' });
    const [c] = await containersOf(d, site, 'shape', 'web');
    const info = await d.getContainer(c?.Id ?? '').inspect();
    expect(info.HostConfig.Memory).toBe(64 * 1024 * 1024);
    expect(info.HostConfig.NanoCpus).toBe(500_000_000);
    expect(info.HostConfig.RestartPolicy?.Name).toBe('on-failure');
    expect(info.Config.Env).toEqual(expect.arrayContaining(['PORT=8080', 'MODE=test']));
    expect(info.Mounts.map((m) => m.Name)).toEqual(['outpost_shape_data']);
    const bridge = await d
      .getNetwork('bridge')
      .inspect()
      .then(
        () => true,
        () => false,
      );
    expect(Object.keys(info.HostConfig.PortBindings ?? {}).length > 0).toBe(bridge);
    const vol = await d.getVolume('outpost_shape_data').inspect();
    expect(vol.Labels).toMatchObject({ [LABELS.site]: site, [LABELS.stack]: 'shape' });

    await rt.remove('shape', { volumes: false });
    await d.getVolume('outpost_shape_data').inspect();
    await rt.remove('shape', { volumes: true });
    await expect(d.getVolume('outpost_shape_data').inspect()).rejects.toMatchObject({ statusCode: 404 });
  });
});

/** The manifest digest (hex) a registry serves for repo:tag. */
function manifestDigest(host: string, repo: string, tag: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const [hostname, port] = host.split(':');
    const req = request(
      {
        hostname,
        port: Number(port),
        method: 'HEAD',
        path: `/v2/${repo}/manifests/${tag}`,
        headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      },
      (res) => {
        res.resume();
        const dg = res.headers['docker-content-digest'];
        if (res.statusCode === 200 && typeof dg === 'string' && dg.startsWith('sha256:'))
          resolve(dg.slice(7));
        else reject(new Error(`registry answered ${res.statusCode} without a digest`));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

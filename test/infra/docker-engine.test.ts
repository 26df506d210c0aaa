/**
 * The private Docker engine (scripts/docker-engine.sh, DESIGN §8) really runs the test images:
 * healthchecks inside loopback-only containers go healthy or unhealthy, and pulls work from the
 * loopback registry (scripts/registry.sh). Every container is labelled for this run and removed.
 */
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  docker,
  execIn,
  isNotFound,
  pullImage,
  removeTestContainers,
  requireDocker,
  runContainer,
  startRegistry,
  TEST_IMAGES,
  testLabels,
  waitForHealth,
} from '../helpers/docker.js';

describe('private Docker engine', () => {
  let d: Docker;

  beforeAll(() => {
    d = docker();
  });

  afterAll(async () => {
    if (d) await removeTestContainers(d);
  });

  it('answers on its own socket with vfs storage and no bridge network', async () => {
    expect(requireDocker()).toMatch(/^unix:\/\/.+docker\.sock$/);
    expect(String(await d.ping())).toBe('OK');
    const info = await d.info();
    expect(info.Driver).toBe('vfs');
    const networks = await d.listNetworks();
    expect(networks.map((n) => n.Name)).not.toContain('bridge');
  });

  it('has the local test images, and web:1 and web:2 differ', async () => {
    const ids = new Map<string, string>();
    for (const ref of Object.values(TEST_IMAGES)) {
      const img = await d.getImage(ref).inspect();
      expect(img.Config.Labels?.['outpost.test.recipe']).toBeDefined();
      ids.set(ref, img.Id);
    }
    expect(ids.get(TEST_IMAGES.web1)).not.toBe(ids.get(TEST_IMAGES.web2));
    const web = await d.getImage(TEST_IMAGES.web1).inspect();
    expect(web.Config.Healthcheck?.Test?.[0]).toBe('CMD-SHELL');
  });

  it('runs outpost-test/web:1 until its healthcheck reports healthy', async () => {
    const c = await runContainer(d, { Image: TEST_IMAGES.web1, name: `outpost-infra-web1-${process.pid}` });
    await waitForHealth(c, 'healthy');
    const res = await execIn(d, c, ['wget', '-q', '-O-', 'http://127.0.0.1:8080/version']);
    expect(res).toMatchObject({ exitCode: 0, stdout: '1\n' });
    const info = await c.inspect();
    expect(info.Config.Labels).toMatchObject(testLabels());
    expect(info.State.Running).toBe(true);

    // PID 1 handles SIGTERM: a stop ends it with 0, not with the SIGKILL (137) after the timeout.
    await c.stop({ t: 20 });
    expect((await c.inspect()).State.ExitCode).toBe(0);
  });

  it('web:2 serves its own content on the port given by env PORT', async () => {
    const c = await runContainer(d, { Image: TEST_IMAGES.web2, Env: ['PORT=9090'] });
    await waitForHealth(c, 'healthy');
    const res = await execIn(d, c, ['wget', '-q', '-O-', 'http://127.0.0.1:9090/version']);
    expect(res).toMatchObject({ exitCode: 0, stdout: '2\n' });
  });

  it('outpost-test/broken:1 keeps running but becomes unhealthy', async () => {
    const c = await runContainer(d, { Image: TEST_IMAGES.broken });
    await waitForHealth(c, 'unhealthy');
    const info = await c.inspect();
    expect(info.State.Running).toBe(true);
    expect(info.State.Health?.FailingStreak).toBeGreaterThanOrEqual(3);
  });

  it('busybox:1 runs one-off commands and reports their exit code', async () => {
    const c = await runContainer(d, { Image: TEST_IMAGES.busybox, Cmd: ['sh', '-c', 'echo hi; exit 5'] });
    const { StatusCode } = (await c.wait()) as { StatusCode: number };
    expect(StatusCode).toBe(5);
    const logs = await c.logs({ stdout: true, stderr: false });
    expect(logs.toString('utf8')).toContain('hi');
  });

  it('pulls from the loopback registry', async () => {
    const registry = await startRegistry([TEST_IMAGES.web1, TEST_IMAGES.web2]);
    const ref = `${registry.host}/${TEST_IMAGES.web1}`;
    // registry.sh untagged the pushed name locally, so this pull has to fetch from the registry.
    await expect(d.getImage(ref).inspect()).rejects.toSatisfy(isNotFound);
    await pullImage(d, ref);
    const pulled = await d.getImage(ref).inspect();
    const local = await d.getImage(TEST_IMAGES.web1).inspect();
    expect(pulled.Id).toBe(local.Id);
    const digest = pulled.RepoDigests.find((r) => r.startsWith(`${registry.host}/outpost-test/web@sha256:`));
    expect(digest).toBeDefined();

    // Pinned by digest, as the agent pulls (DESIGN §3): web:2 has a different digest.
    await pullImage(d, `${registry.host}/${TEST_IMAGES.web2}`);
    const web2 = await d.getImage(`${registry.host}/${TEST_IMAGES.web2}`).inspect();
    const digest2 = web2.RepoDigests.find((r) => r.startsWith(`${registry.host}/`));
    expect(digest2).toBeDefined();
    expect(digest2).not.toBe(digest);
    await pullImage(d, digest!);

    await expect(pullImage(d, `${registry.host}/outpost-test/missing:1`)).rejects.toThrow();

    // Untag what the pulls added (the images stay: their outpost-test/* tags still hold them).
    for (const r of [ref, `${registry.host}/${TEST_IMAGES.web2}`, digest!, digest2!]) {
      await d
        .getImage(r)
        .remove()
        .catch((e: unknown) => {
          if (!isNotFound(e)) throw e;
        });
    }
    expect((await d.getImage(TEST_IMAGES.web1).inspect()).Id).toBe(local.Id);
    await registry.stop();
  });
});

/**
 * `outpost up` end to end (README quick start, DESIGN §1): from an empty data folder it generates the
 * PKI and trust root, starts the broker (TLS, client certificates, SQLite) and the controller, starts
 * a local agent against the private Docker engine, and deploys the sample stack through the REST API.
 * Then, as an operator would, we read the site's signed state back through the API and the CLI.
 * Nothing is mocked: real TLS, real MQTT, real SQLite files, a real container.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { docker, removeContainers, requireDocker, spawnNode, tmpDir, waitFor } from '../helpers/index.js';

const SITE = 'up-e2e';

interface SiteState {
  online: boolean | null;
  state: { stacks?: { name: string; rev: number; want: number; h: string }[]; last?: number } | null;
  status: { online?: boolean; stacks?: Record<string, { running: number; health: string }> } | null;
}

describe('outpost up', () => {
  afterAll(async () => {
    await removeContainers(docker(), { 'io.outpost.site': SITE });
  });

  it('deploys the sample stack to a local agent; the API and the CLI show it running and healthy (I1, I5, I10)', async () => {
    const dockerHost = requireDocker();
    const data = tmpDir('up');
    const up = spawnNode(
      'cli/main.ts',
      ['up', '--data', data, '--api-port', '0', '--mqtt-port', '0', '--site', SITE, '--timeout', '120'],
      { DOCKER_HOST: dockerHost },
    );
    await up.waitForOutput(/sample stack {2}(running and healthy|did not apply)/, { timeoutMs: 150_000 });
    const out = up.stdout();
    expect(out, up.output()).toContain(`sample stack  running and healthy at site ${SITE}`);
    expect(out).toMatch(/MQTT \(TLS\)\s+mqtts:\/\/127\.0\.0\.1:\d+/);
    expect(out).toContain(`${SITE}: applied`);

    // The operator's view through the REST API: the site's signed state reports the stack healthy.
    const api = readFileSync(join(data, 'api.url'), 'utf8').trim();
    const token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    const site = await waitFor(
      async () => {
        const res = await fetch(`${api}/v1/sites/${SITE}`, { headers: { authorization: `Bearer ${token}` } });
        const body = (await res.json()) as SiteState;
        const hello = body.state?.stacks?.find((s) => s.name === 'hello');
        const shown = body.status?.stacks?.hello;
        return body.online === true &&
          hello?.rev === 1 &&
          hello.h === 'healthy' &&
          shown?.health === 'healthy'
          ? body
          : undefined;
      },
      { timeoutMs: 60_000, message: 'site state with hello rev 1 healthy' },
    );
    expect(site.status?.stacks?.hello).toMatchObject({ running: 1, health: 'healthy' });

    // The operator CLI finds the API and token written by `up` and shows the same.
    const cli = spawnNode('cli/main.ts', ['sites', '--api', api, '--token-file', join(data, 'admin.token')]);
    expect((await cli.exited).code, cli.output()).toBe(0);
    expect(cli.stdout()).toContain(SITE);
    expect(cli.stdout()).toMatch(/hello/);

    // What the CLI and a restart rely on: the token file (private) and the PKI.
    expect(token).toMatch(/^opt_/);
    expect(existsSync(join(data, 'certs', 'trust', 'trust-root.cbor'))).toBe(true);
    // The container really runs, labelled as ours, and is healthy.
    const containers = await docker().listContainers({ filters: { label: [`io.outpost.site=${SITE}`] } });
    expect(containers.map((c) => c.Labels['io.outpost.stack'])).toEqual(['hello']);
    const info = await docker().getContainer(containers[0]!.Id).inspect();
    expect(info.State.Health?.Status).toBe('healthy');

    // Ctrl-C stops everything cleanly.
    up.child.kill('SIGINT');
    const { code } = await up.exited;
    expect(code, up.output()).toBe(0);
  }, 300_000);
});

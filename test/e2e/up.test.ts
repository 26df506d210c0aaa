/**
 * `outpost up` end to end (README quick start, DESIGN §1): from an empty data folder it generates the
 * PKI and trust root, starts the broker (TLS, client certificates, SQLite) and the controller, starts
 * a local agent against the private Docker engine, and deploys the sample stack through the REST API.
 * The sample must come up healthy, acknowledged by the agent's signed acks, with nothing mocked.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { docker, removeContainers, requireDocker, spawnNode, tmpDir } from '../helpers/index.js';

const SITE = 'up-e2e';

describe('outpost up', () => {
  afterAll(async () => {
    await removeContainers(docker(), { 'io.outpost.site': SITE });
  });

  it('deploys the sample stack to a local agent, which reports it applied and healthy (I1, I5, I10)', async () => {
    const dockerHost = requireDocker();
    const data = tmpDir('up');
    const up = spawnNode(
      'cli/main.ts',
      [
        'up',
        '--data',
        data,
        '--api-port',
        '0',
        '--mqtt-port',
        '0',
        '--site',
        SITE,
        '--once',
        '--timeout',
        '120',
      ],
      { DOCKER_HOST: dockerHost },
    );
    const { code } = await up.exited;
    const out = up.stdout();
    expect(out, up.output()).toContain('Outpost is up.');
    expect(out).toMatch(/REST API\s+http:\/\/127\.0\.0\.1:\d+\/v1/);
    expect(out).toMatch(/MQTT \(TLS\)\s+mqtts:\/\/127\.0\.0\.1:\d+/);
    expect(out).toContain(`local agent   site ${SITE}`);
    expect(out).toContain(`${SITE}: applied`);
    expect(out).toContain(`sample stack  running and healthy at site ${SITE}`);
    expect(code).toBe(0);
    // What the CLI and a restart rely on: the token file (private) and the PKI.
    const token = join(data, 'admin.token');
    expect(readFileSync(token, 'utf8').trim()).toMatch(/^opt_/);
    expect(existsSync(join(data, 'certs', 'trust', 'trust-root.cbor'))).toBe(true);
    expect(existsSync(join(data, 'certs', 'sites', SITE, 'site.crt'))).toBe(true);
    // The container really runs, labelled as ours, and is healthy.
    const containers = await docker().listContainers({ filters: { label: [`io.outpost.site=${SITE}`] } });
    expect(containers.map((c) => c.Labels['io.outpost.stack'])).toEqual(['hello']);
    const info = await docker().getContainer(containers[0]!.Id).inspect();
    expect(info.State.Health?.Status).toBe('healthy');
  }, 240_000);
});

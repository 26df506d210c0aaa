/** Compose → canonical StackSpec ([PAY-SPEC-1]): supported keys, errors with key paths, determinism. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { composeToSpec } from '../../controller/src/compose/index.js';
import { parseBytes, parseCpus, parseDurationMs, shellSplit } from '../../controller/src/compose/units.js';
import { isApiError } from '../../controller/src/errors.js';
import { decodeSpec, imageRef } from '../../protocol/src/index.js';
import { REPO_ROOT } from '../helpers/index.js';

const D = (c: string) => c.repeat(64);

function errorsOf(src: string, allowTags = false): { path: string; message: string }[] {
  try {
    composeToSpec(src, { stack: 'app', allowTags });
  } catch (err) {
    if (isApiError(err) && err.code === 'invalid-compose') return [...(err.errors ?? [])];
    throw err;
  }
  throw new Error('expected invalid-compose');
}

describe('Compose translation', () => {
  it('translates the reference 3-service stack and stays within the wire budget', () => {
    const src = readFileSync(join(REPO_ROOT, 'test/fixtures/stacks/reference-3svc.compose.yml'), 'utf8');
    const t = composeToSpec(src, { stack: 'ref' });
    expect(Object.keys(t.spec.svc)).toEqual(['collector', 'historian', 'hmi']);
    expect(t.spec.vol).toEqual(['history']);
    expect(t.spec.svc['historian']).toMatchObject({
      vols: ['history:/var/lib/historian'],
      mem: 128 * 1024 * 1024,
      rst: 'unless-stopped',
    });
    expect(t.spec.svc['collector']?.hc).toEqual({
      test: ['CMD', 'wget', '-q', '-O-', 'http://127.0.0.1:8080/health'],
      int: 30,
      ret: 3,
    });
    expect(imageRef(t.spec.svc['hmi']!)).toBe(
      `registry.plant.local/acme/hmi@sha256:1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b`,
    );
    expect(t.critical).toEqual([]);
    expect(t.encoded.z).toBe(true);
    expect(t.encoded.bytes.length).toBeLessThan(500);
    expect(decodeSpec(t.encoded.bytes, t.encoded.z)).toEqual(t.spec);
  });

  it('gives the same digest for the same content whatever the key order, quoting and syntax', () => {
    const a = `services:
  web:
    image: r.local/web@sha256:${D('a')}
    environment: { B: "2", A: "1" }
    ports: ["8080:80/tcp"]
    command: ["run", "--fast"]
    labels: [x=1]
    deploy: { resources: { limits: { memory: 64m, cpus: "0.5" } } }
`;
    const b = `# the same stack
services:
  web:
    deploy:
      resources:
        limits: { cpus: 0.5, memory: 67108864 }
    labels: { x: "1" }
    command: run --fast
    ports:
      - target: 80
        published: 8080
    environment:
      - A=1
      - B=2
    image: "r.local/web:ignored@sha256:${D('a')}"
`;
    const ta = composeToSpec(a, { stack: 'app' });
    const tb = composeToSpec(b, { stack: 'app' });
    expect(Buffer.from(tb.encoded.digest).toString('hex')).toBe(
      Buffer.from(ta.encoded.digest).toString('hex'),
    );
    expect(ta.spec.svc['web']).toMatchObject({
      cpu: 500,
      mem: 64 * 1024 * 1024,
      ports: ['8080:80'],
      cmd: ['run', '--fast'],
    });
    const c = composeToSpec(a.replace('"2"', '"3"'), { stack: 'app' });
    expect(Buffer.from(c.encoded.digest).equals(Buffer.from(ta.encoded.digest))).toBe(false);
  });

  it('supports anchors, merge keys, extensions, healthcheck forms and durations', () => {
    const t = composeToSpec(
      `x-common: &common
  restart: always
  environment: { TZ: UTC }
version: "3.8"
name: app
services:
  a:
    <<: *common
    image: r.local/a@sha256:${D('b')}
    healthcheck: { test: "curl -f localhost || exit 1", interval: 1m30s, timeout: 5s, start_period: 0s, retries: 2 }
    user: 1000
    x-note: ignored
  b:
    <<: *common
    image: r.local/b@sha256:${D('c')}
    healthcheck: { disable: true }
    entrypoint: ["/bin/sh", "-c"]
    command: "echo 'a b' \\"c d\\" $$HOME"
`,
      { stack: 'app' },
    );
    expect(t.spec.svc['a']).toMatchObject({
      rst: 'always',
      env: { TZ: 'UTC' },
      user: '1000',
      hc: { test: ['CMD-SHELL', 'curl -f localhost || exit 1'], int: 90, to: 5, sp: 0, ret: 2 },
    });
    expect(t.spec.svc['b']).toMatchObject({
      hc: { test: ['NONE'] },
      ep: ['/bin/sh', '-c'],
      cmd: ['echo', 'a b', 'c d', '$HOME'],
    });
  });

  it('marks privileged, host network and host mounts critical', () => {
    const t = composeToSpec(
      `services:\n  p:\n    image: r.local/p@sha256:${D('d')}\n    privileged: true\n    network_mode: host\n    volumes: ["/dev:/dev:ro"]\n`,
      { stack: 'app' },
    );
    expect(t.critical).toEqual(['p: privileged', 'p: host network', 'p: host mount /dev']);
    expect(t.spec.svc['p']?.vols).toEqual(['/dev:/dev:ro']);
  });

  it.each([
    ['tag image', `services:\n  w:\n    image: nginx:1.25\n`, 'services.w.image', /pinned by digest/],
    ['bad digest', `services:\n  w:\n    image: r/w@sha256:abc\n`, 'services.w.image', /64 lowercase hex/],
    ['missing image', `services:\n  w:\n    restart: always\n`, 'services.w.image', /required/],
    [
      'unknown service key',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    container_name: x\n`,
      'services.w.container_name',
      /unsupported key/,
    ],
    [
      'unknown top-level key',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\nnetworks: {}\n`,
      'networks',
      /unsupported key/,
    ],
    [
      'container-only port',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    ports: ["80", "81:81"]\n`,
      'services.w.ports[0]',
      /host port required/,
    ],
    [
      'port range',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    ports: ["81:81", "8000-8001:8000-8001"]\n`,
      'services.w.ports[1]',
      /ranges/,
    ],
    [
      'port out of range',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    ports: ["70000:80"]\n`,
      'services.w.ports[0]',
      /outside 1..65535/,
    ],
    [
      'interpolation',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    environment:\n      A: "\${HOST}"\n`,
      'services.w.environment.A',
      /interpolation/,
    ],
    [
      'env without value',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    environment: [PATH]\n`,
      'services.w.environment[0]',
      /no value/,
    ],
    [
      'undeclared volume',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    volumes: ["data:/data"]\n`,
      'services.w.volumes[0]',
      /not declared/,
    ],
    [
      'relative bind',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    volumes: ["./x:/x"]\n`,
      'services.w.volumes[0]',
      /relative/,
    ],
    [
      'anonymous volume',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    volumes: ["/data"]\n`,
      'services.w.volumes[0]',
      /anonymous/,
    ],
    [
      'volume options',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\nvolumes:\n  d: { driver: nfs }\n`,
      'volumes.d',
      /not supported/,
    ],
    [
      'sub-second duration',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    healthcheck: { test: [CMD, x], interval: 500ms }\n`,
      'services.w.healthcheck.interval',
      /whole number of seconds/,
    ],
    [
      'restart on-failure:3',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    restart: on-failure:3\n`,
      'services.w.restart',
      /on-failure:N/,
    ],
    [
      'deploy replicas',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    deploy: { replicas: 2 }\n`,
      'services.w.deploy.replicas',
      /unsupported key/,
    ],
    [
      'service name',
      `services:\n  Web:\n    image: r/w@sha256:${D('a')}\n`,
      'services.Web',
      /invalid service name/,
    ],
    [
      'name mismatch',
      `name: other\nservices:\n  w:\n    image: r/w@sha256:${D('a')}\n`,
      'name',
      /pushed as stack app/,
    ],
    [
      'network mode',
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    network_mode: "service:db"\n`,
      'services.w.network_mode',
      /bridge, host or none/,
    ],
    ['no services', `volumes: {}\n`, 'services', /required/],
    ['not a map', `- a\n- b\n`, '(root)', /must be a map/],
  ])('%s', (_name, src, path, message) => {
    const errs = errorsOf(src);
    const hit = errs.find((e) => e.path === path);
    expect(hit, JSON.stringify(errs)).toBeDefined();
    expect(hit!.message).toMatch(message);
  });

  it('reports YAML syntax errors and duplicate keys with their line', () => {
    expect(errorsOf('services:\n  w: [\n')[0]!.path).toMatch(/^line \d+, column \d+$/);
    const dup = errorsOf(
      `services:\n  w:\n    image: r/w@sha256:${D('a')}\n    image: r/w@sha256:${D('b')}\n`,
    );
    expect(dup[0]!.message).toMatch(/unique/i);
  });

  it('caps YAML aliases (billion laughs) and file size', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 0; i < 8; i++)
      bomb.push(
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(97 + i)}`)
          .join(',')}]`,
      );
    expect(errorsOf(bomb.join('\n'))[0]!.message).toMatch(/alias/i);
    expect(errorsOf(`# ${'x'.repeat(300 * 1024)}\nservices: {}\n`)[0]!.message).toMatch(/exceeds/);
  });

  it('accepts tags only when asked', () => {
    const t = composeToSpec(`services:\n  w:\n    image: registry:5000/acme/w\n`, {
      stack: 'app',
      allowTags: true,
    });
    expect(t.spec.svc['w']).toEqual({ img: 'registry:5000/acme/w', tag: 'latest' });
  });

  it('parses Compose units', () => {
    expect(parseDurationMs('1h2m3s')).toBe(3_723_000);
    expect(parseDurationMs('1.5s')).toBe(1500);
    expect(parseDurationMs('10')).toBeUndefined();
    expect(parseBytes('1g')).toBe(1024 ** 3);
    expect(parseBytes('512KB')).toBe(512 * 1024);
    expect(parseBytes('12x')).toBeUndefined();
    expect(parseCpus('0.25')).toBe(250);
    expect(parseCpus(0)).toBeUndefined();
    expect(shellSplit(`a "b c" 'd e' f\\ g`)).toEqual(['a', 'b c', 'd e', 'f g']);
    expect(shellSplit('a "b')).toBeUndefined();
  });
});

/**
 * Pure parts of the runtime: policy (DESIGN §5, I9), health evaluation, mirror rewriting, snapshot
 * building, crash-loop backoff, the per-stack mutex. No Docker.
 */
import { describe, expect, it } from 'vitest';
import { StartBackoff } from '../../agent/src/runtime/backoff.js';
import { containerOptions } from '../../agent/src/runtime/executors.js';
import { serviceHash } from '../../agent/src/runtime/hash.js';
import { type ContainerHealth, serviceHealth, stackHealth } from '../../agent/src/runtime/health.js';
import { mirrorRef, splitRef } from '../../agent/src/runtime/images.js';
import { KeyedMutex } from '../../agent/src/runtime/mutex.js';
import { parseVolume, validateTarget } from '../../agent/src/runtime/policy.js';
import { buildStackState } from '../../agent/src/runtime/snapshot.js';
import { type DesiredStack, LABELS } from '../../agent/src/runtime/types.js';
import type { Service } from '../../protocol/src/index.js';

const DIG = new Uint8Array(32).fill(7);
const pinned: Service = { img: 'reg.local/acme/web', dig: DIG };
const stack = (svc: Record<string, Service>, extra: Partial<DesiredStack> = {}): DesiredStack => ({
  name: 'plant',
  rev: 1,
  spec: { svc },
  digest: 'd',
  ...extra,
});
const strict = { allowTags: false };

describe('policy (DESIGN §5)', () => {
  it('accepts a digest-pinned plain stack', () => {
    expect(validateTarget(stack({ web: pinned }), strict)).toBeUndefined();
  });

  it('refuses tags unless the site allows them', () => {
    const s = stack({ web: { img: 'reg.local/acme/web', tag: '1' } });
    expect(validateTarget(s, strict)?.reason).toBe('policy');
    expect(validateTarget(s, { allowTags: true })).toBeUndefined();
  });

  it.each([
    ['privileged', { priv: true }],
    ['host network', { net: 'host' }],
    ['host mount', { vols: ['/etc:/host-etc:ro'] }],
  ])('refuses %s unless approved as critical', (_what, patch) => {
    const s = stack({ web: { ...pinned, ...patch } as Service });
    expect(validateTarget(s, strict)).toMatchObject({ reason: 'policy' });
    expect(validateTarget({ ...s, approvedCritical: true }, strict)).toBeUndefined();
  });

  it('bad input is malformed, typed, not thrown (I9)', () => {
    expect(validateTarget(stack({ web: pinned }, { name: 'Bad Name' }), strict)?.reason).toBe('malformed');
    expect(validateTarget(stack({ web: pinned }, { rev: 0 }), strict)?.reason).toBe('malformed');
    expect(validateTarget(stack({}), strict)?.reason).toBe('malformed');
    expect(validateTarget(stack({ web: { ...pinned, vols: ['data'] } }), strict)?.reason).toBe('malformed');
    expect(validateTarget(stack({ web: { ...pinned, vols: ['./rel:/x'] } }), strict)?.reason).toBe(
      'malformed',
    );
    expect(validateTarget(stack({ web: { ...pinned, ports: ['99999:80'] } }), strict)?.reason).toBe(
      'malformed',
    );
    const junk = { name: 'plant', rev: 1, spec: { svc: { web: { img: 5 } } }, digest: '' };
    expect(validateTarget(junk as unknown as DesiredStack, strict)?.reason).toBe('malformed');
    expect(validateTarget(undefined as unknown as DesiredStack, strict)?.reason).toBe('malformed');
  });

  it('parses volume entries', () => {
    expect(parseVolume('data:/var/lib/x:ro')).toEqual({
      kind: 'named',
      volume: 'data',
      target: '/var/lib/x',
      readOnly: true,
    });
    expect(parseVolume('/srv/x:/x')).toEqual({
      kind: 'host',
      source: '/srv/x',
      target: '/x',
      readOnly: false,
    });
    expect(parseVolume('data:/x:rx')).toBeUndefined();
    expect(parseVolume('data:rel')).toBeUndefined();
  });
});

describe('container options', () => {
  const step = (spec: Service) =>
    ({
      kind: 'createContainer',
      stack: 'plant',
      service: 'web',
      name: 'outpost_plant_web',
      rev: 3,
      hash: 'h',
      ref: 'x:1',
      spec,
    }) as const;

  it('maps the spec: labels (ours win), limits, healthcheck ns, restart default, volumes, ports', () => {
    const o = containerOptions(
      'site-1',
      step({
        img: 'x',
        tag: '1',
        env: { A: '1' },
        cmd: ['run'],
        ep: ['/bin/sh', '-c'],
        user: '65534',
        mem: 64 * 1024 * 1024,
        cpu: 250,
        hc: { test: ['wget', '-q', 'http://127.0.0.1/'], int: 2, to: 1, ret: 4, sp: 3 },
        vols: ['data:/data', '/srv/x:/x:ro'],
        ports: ['127.0.0.1:8080:80', '9000:9000/udp'],
        lbl: { [LABELS.rev]: 'spoof', team: 'ops' },
      }),
      'x:1',
      true,
    );
    expect(o.Labels).toMatchObject({
      [LABELS.rev]: '3',
      [LABELS.site]: 'site-1',
      [LABELS.managed]: 'true',
      team: 'ops',
    });
    expect(o.Env).toEqual(['A=1']);
    expect(o.Healthcheck).toEqual({
      Test: ['CMD', 'wget', '-q', 'http://127.0.0.1/'],
      Interval: 2e9,
      Timeout: 1e9,
      Retries: 4,
      StartPeriod: 3e9,
    });
    expect(o.HostConfig).toMatchObject({
      RestartPolicy: { Name: 'unless-stopped' },
      Memory: 64 * 1024 * 1024,
      NanoCpus: 250_000_000,
      NetworkMode: 'default',
      Privileged: false,
      Mounts: [
        { Type: 'volume', Source: 'outpost_plant_data', Target: '/data', ReadOnly: false },
        { Type: 'bind', Source: '/srv/x', Target: '/x', ReadOnly: true },
      ],
      PortBindings: {
        '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }],
        '9000/udp': [{ HostIp: '', HostPort: '9000' }],
      },
    });
    expect(o.ExposedPorts).toEqual({ '80/tcp': {}, '9000/udp': {} });
  });

  it('does not bind ports when the engine cannot publish or the network is none/host', () => {
    const s: Service = { img: 'x', tag: '1', ports: ['8080:80'] };
    expect(containerOptions('s', step(s), 'x:1', false).HostConfig?.PortBindings).toEqual({});
    expect(containerOptions('s', step({ ...s, net: 'none' }), 'x:1', true).HostConfig?.PortBindings).toEqual(
      {},
    );
    expect(containerOptions('s', step({ ...s, rst: 'no' }), 'x:1', true).HostConfig?.RestartPolicy).toEqual({
      Name: 'no',
    });
  });
});

describe('images', () => {
  it('rewrites the registry host to the mirror', () => {
    expect(mirrorRef('reg.acme.com/x/web@sha256:ab', '127.0.0.1:5000')).toBe(
      '127.0.0.1:5000/x/web@sha256:ab',
    );
    expect(mirrorRef('localhost:5000/web:1', 'm:1')).toBe('m:1/web:1');
    expect(mirrorRef('acme/web:1', 'm:1')).toBe('m:1/acme/web:1');
    expect(mirrorRef('web', 'm:1/')).toBe('m:1/web');
    expect(splitRef('h:5000/a/b')).toEqual({ repo: 'h:5000/a/b', suffix: '' });
    expect(splitRef('h:5000/a/b:2')).toEqual({ repo: 'h:5000/a/b', suffix: ':2' });
  });
});

const running = (patch: Partial<ContainerHealth> = {}): ContainerHealth => ({
  state: 'running',
  health: undefined,
  startedAtMs: 1_000,
  exitCode: 0,
  restartCount: 0,
  ...patch,
});

describe('health', () => {
  it('service health from the container', () => {
    expect(serviceHealth(undefined, undefined, 0, 0)).toBe('stopped');
    expect(serviceHealth(running({ health: 'unhealthy' }), undefined, 9e9, 0)).toBe('unhealthy');
    expect(serviceHealth(running(), undefined, 1_500, 1_000)).toBe('starting');
    expect(serviceHealth(running(), undefined, 2_000, 1_000)).toBe('healthy');
    expect(serviceHealth(running({ state: 'restarting' }), undefined, 9e9, 0)).toBe('unhealthy');
    expect(serviceHealth(running({ state: 'exited' }), { rst: 'no' }, 9e9, 0)).toBe('healthy');
    expect(serviceHealth(running({ state: 'exited', exitCode: 1 }), { rst: 'no' }, 9e9, 0)).toBe('stopped');
    expect(serviceHealth(running({ state: 'exited' }), undefined, 9e9, 0)).toBe('stopped');
  });

  it('stack aggregation', () => {
    expect(stackHealth([])).toBe('unknown');
    expect(stackHealth(['healthy', 'healthy'])).toBe('healthy');
    expect(stackHealth(['healthy', 'starting'])).toBe('starting');
    expect(stackHealth(['stopped', 'stopped'])).toBe('stopped');
    expect(stackHealth(['stopped', 'healthy'])).toBe('unhealthy');
    expect(stackHealth(['starting', 'unhealthy'])).toBe('unhealthy');
    expect(stackHealth(['healthy', 'unknown'])).toBe('unknown');
  });
});

describe('snapshot building', () => {
  const web: Service = { img: 'x', tag: '1' };
  const c = (service: string, rev: number, hash: string) => ({
    id: service,
    name: `outpost_plant_${service}`,
    stack: 'plant',
    service,
    rev,
    hash,
    imageId: 'sha256:1',
    state: 'running' as const,
    exitCode: 0,
  });

  it('reports the known target revision when every service runs its hash, else the highest label', () => {
    const t = { ...stack({ web, db: web }), rev: 5 };
    const seen = [
      { c: c('web', 1, serviceHash('plant', 'web', web)), h: running() },
      { c: c('db', 4, serviceHash('plant', 'db', web)), h: running() },
    ];
    expect(buildStackState('plant', seen, t, 99_000, 1_000)).toEqual({
      name: 'plant',
      rev: 5,
      want: 5,
      h: 'healthy',
      svc: [
        { n: 'db', st: 'running', h: 'healthy', rs: 0 },
        { n: 'web', st: 'running', h: 'healthy', rs: 0 },
      ],
    });
    const drifted = [seen[0], { c: c('db', 4, 'other'), h: running() }] as typeof seen;
    expect(buildStackState('plant', drifted, t, 99_000, 1_000)).toMatchObject({ rev: 4, want: 5 });
    const missing = buildStackState('plant', [seen[0]] as typeof seen, t, 99_000, 1_000);
    expect(missing).toMatchObject({ rev: 1, h: 'unhealthy' });
    expect(missing.svc).toContainEqual({ n: 'db', st: 'missing', h: 'stopped' });
    expect(buildStackState('plant', seen, undefined, 99_000, 1_000)).toMatchObject({ rev: 4, want: 4 });
  });
});

describe('backoff and mutex', () => {
  it('crash-loop starts back off and reset after a start holds', () => {
    const b = new StartBackoff(1_000, 8_000, 60_000);
    expect(b.take('s/web', 0).allowed).toBe(true);
    expect(b.take('s/web', 500)).toEqual({ allowed: false, retryAt: 1_000 });
    expect(b.take('s/web', 1_000).allowed).toBe(true);
    expect(b.take('s/web', 2_000)).toEqual({ allowed: false, retryAt: 3_000 });
    expect(b.take('s/web', 70_000).allowed).toBe(true);
    expect(b.take('s/web', 70_500).allowed).toBe(false);
  });

  it('serialises per key, FIFO, and forgets idle keys', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const slow = (tag: string, ms: number) =>
      m.run('a', async () => {
        order.push(`${tag}+`);
        await new Promise((r) => setTimeout(r, ms));
        order.push(`${tag}-`);
      });
    const other = m.run('b', async () => {
      order.push('b');
    });
    await Promise.all([slow('1', 30), slow('2', 1), other]);
    // 'a' runs one at a time in call order; 'b' is not held up by 'a'.
    expect(order.filter((x) => x !== 'b')).toEqual(['1+', '1-', '2+', '2-']);
    expect(order.indexOf('b')).toBeLessThan(order.indexOf('1-'));
    expect(m.busy('a')).toBe(false);
    await expect(m.run('a', async () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(m.busy('a')).toBe(false);
  });
});

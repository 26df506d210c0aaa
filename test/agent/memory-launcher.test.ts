/**
 * The agent's memory settings (DESIGN §7, I8; docs/adr/0005-agent-memory.md) — functional checks, not
 * measurements (those are `npm run bench -- --only agent`):
 * - bin/outpost-agent execs node (no resident launcher) with the flags and environment of
 *   agent/src/launch.ts, and node accepts them;
 * - the lean requires: dockerode under the shipped flags (no WebAssembly) still drives the private
 *   engine, ssh2/gRPC are stand-ins that fail loudly when used, and only inside dockerode;
 * - the lean MQTT connect speaks to a real broker and refuses other schemes.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, test } from 'vitest';
import { leanMqttConnect } from '../../agent/src/core/mqtt-connect.js';
import { AGENT_ENV, AGENT_NODE_FLAGS } from '../../agent/src/launch.js';
import { UnavailableInAgentError, unavailable } from '../../agent/src/lean.js';
import { dockerSocketPath, REPO_ROOT, spawnProcess, TEST_IMAGES, tmpDir, waitFor } from '../helpers/index.js';
import { startTestBroker } from './helpers/broker.js';

const LAUNCHER = join(REPO_ROOT, 'bin', 'outpost-agent');

/** A stand-in node that records its pid, argv and the memory variables, one per line. */
function fakeNode(dir: string): { path: string; out: string } {
  const out = join(dir, 'argv.txt');
  const path = join(dir, 'fake-node');
  writeFileSync(
    path,
    `#!/bin/sh\n{ echo "$$"; echo "MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX UV_THREADPOOL_SIZE=$UV_THREADPOOL_SIZE"; for a in "$@"; do echo "$a"; done; } > ${out}\n`,
  );
  chmodSync(path, 0o755);
  return { path, out };
}

describe('bin/outpost-agent', () => {
  test('execs node with the shipped flags and environment: the launcher pid becomes node', async () => {
    const dir = tmpDir('launcher');
    const fake = fakeNode(dir);
    const p = spawnProcess(LAUNCHER, ['--site', 'pump-7', '--allow-tags'], {
      env: { OUTPOST_NODE: fake.path, MALLOC_ARENA_MAX: undefined, UV_THREADPOOL_SIZE: undefined },
    });
    expect((await p.exited).code).toBe(0);
    const [pid, env, ...argv] = readFileSync(fake.out, 'utf8').trim().split('\n');
    // exec: the process we started is the one that ran "node" (no launcher left resident).
    expect(Number(pid)).toBe(p.child.pid);
    expect(env).toBe(
      `MALLOC_ARENA_MAX=${AGENT_ENV['MALLOC_ARENA_MAX']} UV_THREADPOOL_SIZE=${AGENT_ENV['UV_THREADPOOL_SIZE']}`,
    );
    expect(argv).toEqual([
      ...AGENT_NODE_FLAGS,
      `${REPO_ROOT}/bin/../dist/cli/main.js`,
      'agent',
      '--site',
      'pump-7',
      '--allow-tags',
    ]);
  });

  test('OUTPOST_AGENT_NODE_FLAGS replaces the flags; preset memory variables are kept', async () => {
    const dir = tmpDir('launcher');
    const fake = fakeNode(dir);
    const p = spawnProcess(LAUNCHER, ['--help'], {
      env: { OUTPOST_NODE: fake.path, OUTPOST_AGENT_NODE_FLAGS: '', MALLOC_ARENA_MAX: '4' },
    });
    expect((await p.exited).code).toBe(0);
    const [, env, ...argv] = readFileSync(fake.out, 'utf8').trim().split('\n');
    expect(env).toMatch(/^MALLOC_ARENA_MAX=4 /);
    expect(argv).toEqual([`${REPO_ROOT}/bin/../dist/cli/main.js`, 'agent', '--help']);
  });

  test('node accepts the flags silently, and they take effect (no WebAssembly, 1 MB semi-spaces)', async () => {
    const p = spawnProcess(process.execPath, [
      ...AGENT_NODE_FLAGS,
      '-e',
      'const v8 = require("node:v8"); const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === "new_space"); console.log(JSON.stringify({ wasm: typeof WebAssembly, newSpace: s.space_size, limit: v8.getHeapStatistics().heap_size_limit }))',
    ]);
    const exit = await p.exited;
    expect(exit.code).toBe(0);
    expect(p.stderr()).toBe('');
    const r = JSON.parse(p.stdout()) as { wasm: string; newSpace: number; limit: number };
    expect(r.wasm).toBe('undefined');
    expect(r.newSpace).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(r.limit).toBeLessThan(128 * 1024 * 1024);
  });
});

describe('lean requires', () => {
  test('a stand-in fails loudly when called, constructed or a member is called', () => {
    const ssh2 = unavailable('ssh2') as {
      Client: new () => unknown;
      utils: { parseKey(k: string): unknown };
    };
    expect(() => new ssh2.Client()).toThrow(UnavailableInAgentError);
    expect(() => ssh2.utils.parseKey('x')).toThrow(/ssh2\.utils\.parseKey is not loaded in the agent/);
    expect(() => (unavailable('uuid') as { v4(): string }).v4()).toThrow(/OUTPOST_AGENT_FULL_DEPS=1/);
  });

  test('dockerode under the shipped flags drives the private engine; ssh2 and gRPC are stand-ins', async () => {
    const dir = tmpDir('lean');
    const script = join(dir, 'lean-child.mts');
    const lean = pathToFileURL(join(REPO_ROOT, 'agent', 'src', 'lean.ts')).href;
    writeFileSync(
      script,
      `import { createRequire } from 'node:module';
import { installLeanRequires, UnavailableInAgentError } from '${lean}';
const stubbed = installLeanRequires();
const req = createRequire('${join(REPO_ROOT, 'package.json')}');
const Docker = req('dockerode');
const docker = new Docker({ socketPath: process.argv[2] });
const ping = String(await docker.ping());
const image = await docker.getImage(process.argv[3]).inspect();
const containers = await docker.listContainers({ all: true });
let ssh = '';
try {
  new Docker({ protocol: 'ssh', host: 'example.invalid', port: 22 });
  await new Docker({ protocol: 'ssh', host: 'example.invalid', port: 22 }).ping();
} catch (err) {
  ssh = err instanceof UnavailableInAgentError ? 'unavailable' : String(err);
}
// Outside dockerode the real modules still load.
const grpcReal = typeof req('@grpc/grpc-js').Server === 'function';
console.log(JSON.stringify({ ping, image: image.RepoTags, containers: Array.isArray(containers), ssh, stubbed: [...stubbed].sort(), grpcReal, wasm: typeof WebAssembly }));
`,
    );
    // Under the shipped flags (no WebAssembly: ssh2 would throw at load if it were loaded).
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
    const p = spawnProcess(process.execPath, [
      ...AGENT_NODE_FLAGS,
      '--import',
      tsx,
      script,
      dockerSocketPath(),
      TEST_IMAGES.web1,
    ]);
    const exit = await p.exited;
    expect(exit.code, p.output()).toBe(0);
    const r = JSON.parse(p.stdout().trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    expect(r['ping']).toBe('OK');
    expect(r['image']).toContain(TEST_IMAGES.web1);
    expect(r['containers']).toBe(true);
    expect(r['ssh']).toBe('unavailable');
    expect(r['stubbed']).toEqual(
      expect.arrayContaining(['@grpc/grpc-js', '@grpc/proto-loader', 'ssh2', 'tar-fs', 'uuid']),
    );
    expect(r['grpcReal']).toBe(true);
    expect(r['wasm']).toBe('undefined');
  }, 60_000);
});

describe('lean MQTT connect', () => {
  test('connects to a real broker over TCP, subscribes and receives', async () => {
    const broker = await startTestBroker();
    const client = leanMqttConnect(broker.url, {
      clientId: 'lean-1',
      protocolVersion: 4,
      reconnectPeriod: 0,
      writeCache: false,
    });
    try {
      await waitFor(() => client.connected, { message: 'connected' });
      const got: string[] = [];
      client.on('message', (_t, payload) => got.push(payload.toString()));
      await client.subscribeAsync('t/1', { qos: 1 });
      await client.publishAsync('t/1', 'hello', { qos: 1 });
      await waitFor(() => got.length === 1, { message: 'message received' });
      expect(got).toEqual(['hello']);
    } finally {
      await client.endAsync(true);
      await broker.close();
    }
  });

  test('refuses schemes other than mqtt:// and mqtts://', () => {
    expect(() => leanMqttConnect('ws://127.0.0.1:1', {})).toThrow(/unsupported MQTT URL scheme/);
  });
});

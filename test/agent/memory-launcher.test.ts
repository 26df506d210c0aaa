/**
 * The agent's memory settings (DESIGN §7, I8; docs/adr/0005-agent-memory.md, 0007-agent-bundle.md) —
 * functional checks, not measurements (those are `npm run bench -- --only agent`):
 * - bin/outpost-agent execs node (no resident launcher) with the flags and environment of
 *   agent/src/launch.ts, and node accepts them;
 * - it runs the one-file bundle dist/outpost-agent.cjs (`npm run build`), falls back to dist/cli/main.js
 *   with a warning when the bundle is missing or stale, and fails clearly without a build; the rules
 *   are those of launch.ts's agentEntry;
 * - the agent it starts is the bundle: it connects, rejects malformed commands with the reasons and
 *   messages of the protocol code, and loads nothing from node_modules but better-sqlite3, and none of
 *   the modules the bundle leaves out;
 * - the lean requires: dockerode under the shipped flags (no WebAssembly) still drives the private
 *   engine, ssh2/gRPC are stand-ins that fail loudly when used, and only inside dockerode;
 * - the lean MQTT connect speaks to a real broker and refuses other schemes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import mqtt from 'mqtt';
import { describe, expect, test } from 'vitest';
import { leanMqttConnect } from '../../agent/src/core/mqtt-connect.js';
import { AGENT_BUNDLE, AGENT_ENV, AGENT_NODE_FLAGS, agentEntry } from '../../agent/src/launch.js';
import {
  absent,
  leanPerformance,
  leanShim,
  UnavailableInAgentError,
  unavailable,
} from '../../agent/src/lean.js';
import { localAgentCommand } from '../../cli/up.js';
import {
  type Ack,
  clipText,
  encode,
  openAck,
  openCommand,
  PROTOCOL_VERSION,
  sign1,
  Topics,
  TrustStore,
} from '../../protocol/src/index.js';
import { dockerSocketPath, REPO_ROOT, spawnProcess, TEST_IMAGES, tmpDir, waitFor } from '../helpers/index.js';
import { startTestBroker } from './helpers/broker.js';
import { makePki } from './helpers/pki.js';

const LAUNCHER = join(REPO_ROOT, 'bin', 'outpost-agent');
const ENV_LINE = `MALLOC_ARENA_MAX=${AGENT_ENV['MALLOC_ARENA_MAX']} MALLOC_TRIM_THRESHOLD_=${AGENT_ENV['MALLOC_TRIM_THRESHOLD_']} UV_THREADPOOL_SIZE=${AGENT_ENV['UV_THREADPOOL_SIZE']}`;

/** A stand-in node that records its pid, argv and the memory variables, one per line. */
function fakeNode(dir: string): { path: string; out: string } {
  const out = join(dir, 'argv.txt');
  const path = join(dir, 'fake-node');
  writeFileSync(
    path,
    `#!/bin/sh\n{ echo "$$"; echo "MALLOC_ARENA_MAX=$MALLOC_ARENA_MAX MALLOC_TRIM_THRESHOLD_=$MALLOC_TRIM_THRESHOLD_ UV_THREADPOOL_SIZE=$UV_THREADPOOL_SIZE"; for a in "$@"; do echo "$a"; done; } > ${out}\n`,
  );
  chmodSync(path, 0o755);
  return { path, out };
}

const unset = {
  MALLOC_ARENA_MAX: undefined,
  MALLOC_TRIM_THRESHOLD_: undefined,
  UV_THREADPOOL_SIZE: undefined,
};

describe('bin/outpost-agent', () => {
  test('execs node with the shipped flags and environment on the bundle: the launcher pid becomes node', async () => {
    expect(existsSync(AGENT_BUNDLE), `${AGENT_BUNDLE}: \`npm run build\` makes it`).toBe(true);
    const dir = tmpDir('launcher');
    const fake = fakeNode(dir);
    const p = spawnProcess(LAUNCHER, ['--site', 'pump-7', '--allow-tags'], {
      env: { OUTPOST_NODE: fake.path, OUTPOST_AGENT_FULL_DEPS: undefined, ...unset },
    });
    expect((await p.exited).code).toBe(0);
    // A stale or missing bundle would have been reported here (and main.js run instead).
    expect(p.stderr()).toBe('');
    const [pid, env, ...argv] = readFileSync(fake.out, 'utf8').trim().split('\n');
    // exec: the process we started is the one that ran "node" (no launcher left resident).
    expect(Number(pid)).toBe(p.child.pid);
    expect(env).toBe(ENV_LINE);
    expect(argv).toEqual([
      ...AGENT_NODE_FLAGS,
      `${REPO_ROOT}/bin/../dist/outpost-agent.cjs`,
      '--site',
      'pump-7',
      '--allow-tags',
    ]);
    expect(agentEntry(['--site', 'pump-7', '--allow-tags'], {})).toEqual({
      script: AGENT_BUNDLE,
      args: ['--site', 'pump-7', '--allow-tags'],
      bundled: true,
    });
  });

  test('OUTPOST_AGENT_NODE_FLAGS replaces the flags; preset memory variables are kept', async () => {
    const dir = tmpDir('launcher');
    const fake = fakeNode(dir);
    const p = spawnProcess(LAUNCHER, ['--help'], {
      env: {
        OUTPOST_NODE: fake.path,
        OUTPOST_AGENT_NODE_FLAGS: '',
        OUTPOST_AGENT_FULL_DEPS: undefined,
        MALLOC_ARENA_MAX: '4',
        MALLOC_TRIM_THRESHOLD_: undefined,
      },
    });
    expect((await p.exited).code).toBe(0);
    const [, env, ...argv] = readFileSync(fake.out, 'utf8').trim().split('\n');
    expect(env).toMatch(/^MALLOC_ARENA_MAX=4 MALLOC_TRIM_THRESHOLD_=131072 /);
    expect(argv).toEqual([`${REPO_ROOT}/bin/../dist/outpost-agent.cjs`, '--help']);
  });

  test('entry point: the bundle; dist/cli/main.js with a warning when it is missing or stale; an error without a build', async () => {
    // A copy of the launcher in a scratch tree: bin/outpost-agent next to a dist/ we control.
    const root = tmpDir('launcher-tree');
    const dist = join(root, 'dist');
    mkdirSync(join(root, 'bin'));
    mkdirSync(join(dist, 'cli'), { recursive: true });
    copyFileSync(LAUNCHER, join(root, 'bin', 'outpost-agent'));
    chmodSync(join(root, 'bin', 'outpost-agent'), 0o755);
    const fake = fakeNode(root);
    const bundle = join(dist, 'outpost-agent.cjs');
    const main = join(dist, 'cli', 'main.js');
    const launch = async (env: Record<string, string | undefined> = {}) => {
      writeFileSync(fake.out, '');
      const p = spawnProcess(join(root, 'bin', 'outpost-agent'), ['--site', 's1'], {
        env: {
          OUTPOST_NODE: fake.path,
          OUTPOST_AGENT_NODE_FLAGS: '',
          OUTPOST_AGENT_FULL_DEPS: undefined,
          ...env,
        },
      });
      const code = (await p.exited).code;
      const argv = readFileSync(fake.out, 'utf8').trim().split('\n').slice(2);
      return { code, argv, stderr: p.stderr() };
    };
    const mirror = (env: Record<string, string> = {}) => agentEntry(['--site', 's1'], env, dist);
    const viaBin = (f: string) => `${root}/bin/../dist/${f}`;
    const t = (s: number) => new Date(1_700_000_000_000 + s * 1000);

    // No build at all.
    let r = await launch();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^outpost-agent: no agent build in .*dist: run `npm run build`\n$/);
    expect(() => mirror()).toThrow(/no agent build in .*dist: run `npm run build`/);

    // tsc output only: main.js, with a warning.
    writeFileSync(main, '');
    r = await launch();
    expect(r.code).toBe(0);
    expect(r.argv).toEqual([viaBin('cli/main.js'), 'agent', '--site', 's1']);
    expect(r.stderr).toMatch(
      /^outpost-agent: warning: .*outpost-agent\.cjs is missing \(`npm run build` makes it\); running .*main\.js agent instead, which uses more memory\n$/,
    );
    expect(mirror()).toMatchObject({ script: main, args: ['agent', '--site', 's1'], bundled: false });
    expect(mirror().warning).toMatch(/is missing/);

    // The bundle, newer than dist/: the bundle, silently.
    utimesSync(main, t(0), t(0));
    writeFileSync(bundle, '');
    utimesSync(bundle, t(10), t(10));
    r = await launch();
    expect(r).toEqual({ code: 0, argv: [viaBin('outpost-agent.cjs'), '--site', 's1'], stderr: '' });
    expect(mirror()).toEqual({ script: bundle, args: ['--site', 's1'], bundled: true });

    // OUTPOST_AGENT_FULL_DEPS=1: the unbundled CLI, no warning.
    r = await launch({ OUTPOST_AGENT_FULL_DEPS: '1' });
    expect(r).toEqual({ code: 0, argv: [viaBin('cli/main.js'), 'agent', '--site', 's1'], stderr: '' });
    expect(mirror({ OUTPOST_AGENT_FULL_DEPS: '1' })).toEqual({
      script: main,
      args: ['agent', '--site', 's1'],
      bundled: false,
    });

    // tsc ran after the bundle was built: stale bundle, main.js with a warning.
    utimesSync(main, t(20), t(20));
    r = await launch();
    expect(r.argv).toEqual([viaBin('cli/main.js'), 'agent', '--site', 's1']);
    expect(r.stderr).toMatch(
      /^outpost-agent: warning: .*outpost-agent\.cjs is older than the compiled dist\/ /,
    );
    expect(mirror().warning).toMatch(/is older than the compiled dist\//);
  });

  test('`outpost up` starts its local agent as the launcher does: the bundle when compiled, this CLI from source', () => {
    const args = ['--site', 'local', '--allow-tags'];
    // Compiled (`npm start` runs bin/outpost.js → dist/cli/up.js): the entry point agentEntry picks.
    const compiled = localAgentCommand(args, join(REPO_ROOT, 'dist', 'cli', 'up.js'));
    expect(compiled).toEqual({
      cmd: process.execPath,
      args: [...AGENT_NODE_FLAGS, AGENT_BUNDLE, ...args],
    });
    // From source (node --import tsx cli/main.ts up): the agent command of the CLI under test.
    const source = localAgentCommand(args, join(REPO_ROOT, 'cli', 'up.ts'));
    expect(source).toEqual({
      cmd: process.execPath,
      args: [...AGENT_NODE_FLAGS, ...process.execArgv, join(REPO_ROOT, 'cli', 'main.ts'), 'agent', ...args],
    });
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

/** Written into the agent (NODE_OPTIONS=--require): on SIGUSR2, what it has loaded. */
const LOADED_PRELOAD = `'use strict';
process.on('SIGUSR2', () => {
  require('node:fs').writeFileSync(process.env.OUTPOST_TEST_LOADED, JSON.stringify({
    cjs: Object.keys(require.cache),
    builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
  }));
});
`;

describe('the shipped agent (bin/outpost-agent → dist/outpost-agent.cjs)', () => {
  test('runs the bundle: connects, rejects malformed commands as the protocol code does, loads only better-sqlite3 from node_modules', async () => {
    const dir = tmpDir('shipped-agent');
    const site = `ship-${randomBytes(3).toString('hex')}`;
    const pki = makePki(join(dir, 'certs'), site);
    const broker = await startTestBroker();
    const preload = join(dir, 'loaded.cjs');
    const loaded = join(dir, 'loaded.json');
    writeFileSync(preload, LOADED_PRELOAD);
    const topics = new Topics();
    const ctl = await mqtt.connectAsync(broker.url, { clientId: `ctl-${site}`, protocolVersion: 4 });
    const acks: Ack[] = [];
    ctl.on('message', (_t, payload) => acks.push(openAck(payload, pki.keyFor, site)));
    await ctl.subscribeAsync(topics.ack(site), { qos: 1 });
    const agent = spawnProcess(LAUNCHER, ['--site', site, '--broker', broker.url, '--certs', pki.certsDir], {
      env: {
        OUTPOST_AGENT_DATA_DIR: join(dir, 'data'),
        OUTPOST_AGENT_DOCKER_SOCKET: dockerSocketPath(),
        OUTPOST_AGENT_LOG_LEVEL: 'info',
        OUTPOST_AGENT_FULL_DEPS: undefined,
        OUTPOST_AGENT_NODE_FLAGS: undefined,
        NODE_OPTIONS: `--require ${preload}`,
        OUTPOST_TEST_LOADED: loaded,
        ...unset,
      },
    });
    try {
      await agent.waitForOutput('"msg":"subscribed"', { timeoutMs: 60_000 });
      // The process is node (the launcher exec'd), running the bundle with the shipped settings.
      const pid = agent.pid;
      expect(readFileSync(`/proc/${pid}/comm`, 'utf8').trim()).toBe('node');
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const script = cmdline.slice(1).find((a) => /\.(c|m)?js$/.test(a));
      expect(script && realpathSync(script)).toBe(AGENT_BUNDLE);
      expect(cmdline.slice(1, 1 + AGENT_NODE_FLAGS.length)).toEqual([...AGENT_NODE_FLAGS]);
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      for (const [k, v] of Object.entries(AGENT_ENV)) expect(environ).toContain(`${k}=${v}`);
      expect(agent.stderr()).not.toMatch(/warning/);

      // Signed, but not valid against the payload schemas: header, body bounds, pattern, format.
      const iat = Math.floor(Date.now() / 1000);
      const header = { v: PROTOCOL_VERSION, site, iat, exp: iat + 3600 };
      const bad: Record<string, unknown>[] = [
        { ...header, seq: 1, prev: 0, id: randomBytes(16), type: 'heartbeat', body: { last: 0 }, x: 1 },
        { ...header, seq: 2, prev: 1, id: randomBytes(16), type: 'heartbeat', body: { last: -1 } },
        {
          ...header,
          seq: 3,
          prev: 2,
          id: randomBytes(16),
          type: 'stack.apply',
          body: { stack: 'Bad Name', rev: 1, spec: new Uint8Array(8) },
        },
        {
          ...header,
          seq: 4,
          prev: 3,
          id: randomBytes(16),
          type: 'stack.restart',
          body: { stack: 'web', mw: { tz: 'Not/AZone', w: [{ s: '01:00', e: '02:00' }] } },
        },
      ];
      const trust = new TrustStore(pki.root);
      const expected = bad.map((cmd) => {
        const bytes = sign1(encode({ ...cmd, id: new Uint8Array(cmd['id'] as Buffer) }), pki.signer);
        try {
          openCommand(bytes, { site, trust, nowSec: iat });
        } catch (err) {
          return { bytes, rc: (err as { code: string }).code, msg: (err as Error).message };
        }
        throw new Error('expected openCommand to reject');
      });
      expect(expected.map((e) => e.rc)).toEqual(['malformed', 'malformed', 'malformed', 'malformed']);
      for (const e of expected) await ctl.publishAsync(topics.cmd(site), Buffer.from(e.bytes), { qos: 1 });
      await waitFor(() => acks.filter((a) => a.st === 'rejected').length >= expected.length, {
        timeoutMs: 30_000,
        message: `${expected.length} rejections`,
      });
      const byMsg = (a: { msg?: string | undefined }, b: { msg?: string | undefined }) =>
        (a.msg ?? '').localeCompare(b.msg ?? '');
      const got = acks
        .filter((a) => a.st === 'rejected')
        .map((a) => ({ rc: a.rc, msg: a.msg }))
        .sort(byMsg);
      expect(got).toEqual(expected.map((e) => ({ rc: e.rc, msg: clipText(e.msg, 256) })).sort(byMsg));

      // What the bundle loaded: from node_modules only better-sqlite3 (native; with bindings and
      // file-uri-to-path), and none of the modules it leaves out or shims.
      agent.child.kill('SIGUSR2');
      await waitFor(() => existsSync(loaded), { message: 'loaded-modules report' });
      const r = JSON.parse(readFileSync(loaded, 'utf8')) as { cjs: string[]; builtins: string[] };
      const packages = new Set(
        r.cjs.map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)?.[1] ?? '(own)'),
      );
      expect([...packages].sort()).toEqual(['(own)', 'better-sqlite3', 'bindings', 'file-uri-to-path']);
      expect(r.cjs.filter((f) => !f.includes('/node_modules/'))).toEqual([preload, AGENT_BUNDLE]);
      for (const m of ['worker_threads', 'child_process', 'tty', 'assert', 'perf_hooks', 'zlib'])
        expect(r.builtins, m).not.toContain(m);
      // No ES module ran: node's ESM loader never loaded a module job.
      expect(r.builtins).not.toContain('internal/modules/esm/module_job');
    } finally {
      await agent.kill();
      await ctl.endAsync(true);
      await broker.close();
    }
  }, 120_000);
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

  test('shims: the one member each package reads, with the value it has in the agent', () => {
    expect(leanShim('worker_threads')).toEqual({ isMainThread: true });
    const assert = leanShim('assert') as (v: unknown, m?: string) => void;
    expect(() => assert(1, 'fine')).not.toThrow();
    expect(() => assert(0, 'sonic-boom says no')).toThrow('sonic-boom says no');
    expect(() => assert(false)).toThrow(expect.objectContaining({ code: 'ERR_ASSERTION' }));
    expect(() => leanShim('fs')).toThrow(/no lean shim for fs/);
    expect(absent('cbor-extract')).toMatchObject({ code: 'MODULE_NOT_FOUND' });
    // leanPerformance.now(): the clock and origin of performance.now(); other members are node's.
    const a = performance.now();
    const b = leanPerformance.now();
    const c = performance.now();
    expect(b).toBeGreaterThanOrEqual(a - 5);
    expect(b).toBeLessThanOrEqual(c + 5);
    expect((leanPerformance as unknown as { timeOrigin: number }).timeOrigin).toBe(performance.timeOrigin);
  });

  test('debug is silent unless DEBUG is set, and then the real module', () => {
    const saved = process.env['DEBUG'];
    try {
      delete process.env['DEBUG'];
      const silent = leanShim('debug') as (ns: string) => ((...a: unknown[]) => void) & {
        enabled: boolean;
        extend(s: string): { namespace: string };
      };
      const log = silent('mqttjs:client');
      expect(log.enabled).toBe(false);
      expect(log('ignored %s', 'x')).toBeUndefined();
      expect(log.extend('sub').namespace).toBe('mqttjs:client:sub');
      process.env['DEBUG'] = 'nothing-matches';
      expect(leanShim('debug')).toBe(createRequire(join(REPO_ROOT, 'package.json'))('debug'));
    } finally {
      if (saved === undefined) delete process.env['DEBUG'];
      else process.env['DEBUG'] = saved;
    }
  });

  test('unbundled, pino and cbor-x work with their shims and without cbor-extract', () => {
    const dir = tmpDir('lean-shims');
    // Plain node on the compiled lean.js (tsx itself would load worker_threads and child_process).
    const script = join(dir, 'shims-child.mjs');
    const lean = pathToFileURL(join(REPO_ROOT, 'dist', 'agent', 'src', 'lean.js')).href;
    writeFileSync(
      script,
      `import { createRequire } from 'node:module';
import { installLeanRequires } from '${lean}';
const stubbed = installLeanRequires();
const req = createRequire('${join(REPO_ROOT, 'package.json')}');
const { pino } = req('pino');
const lines = [];
const log = pino({ base: null }, { write: (s) => lines.push(JSON.parse(s)) });
log.info({ n: 1 }, 'hello');
const { encode, decode } = req('cbor-x');
const value = { s: 'é'.repeat(300), b: new Uint8Array([1, 2, 3]), n: [1, -2, 2 ** 40] };
const round = decode(encode(value));
const builtins = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
console.log(JSON.stringify({
  stubbed: [...stubbed].sort(),
  line: lines[0]?.msg,
  same: JSON.stringify(round, (_k, v) => (v instanceof Uint8Array ? [...v] : v)) === JSON.stringify(value, (_k, v) => (v instanceof Uint8Array ? [...v] : v)),
  loaded: ['worker_threads', 'child_process', 'assert'].filter((m) => builtins.includes(m)),
  extract: Object.keys(req.cache).some((f) => f.includes('/node_modules/cbor-extract/')),
}));
`,
    );
    const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    expect(out['line']).toBe('hello');
    expect(out['same']).toBe(true);
    expect(out['extract']).toBe(false);
    expect(out['loaded']).toEqual([]);
    expect(out['stubbed']).toEqual(
      expect.arrayContaining(['cbor-extract', 'thread-stream', 'worker_threads']),
    );
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

/**
 * The agent's memory budget (DESIGN §7, I8; docs/adr/0005-agent-memory.md, 0007-agent-bundle.md): keeps
 * code the agent never runs out of its process.
 *
 * dockerode 4 and docker-modem require, at load time, modules that only serve transports and features
 * the agent does not use: `ssh2` (Docker over SSH; it also instantiates WebAssembly at load, which
 * `--jitless` forbids), `@grpc/grpc-js` + `@grpc/proto-loader` (+ protobufjs) and `uuid` (BuildKit
 * sessions for `docker.buildImage`), `tar-fs` + `@balena/dockerignore` + `zlib` (build contexts), and MQTT.js
 * requires `worker-timers` (browser timers; Node uses native timers). Together that is ~13 MB of RSS.
 * pino requires `thread-stream` (and through it `worker_threads`) for transports the agent never
 * configures, and cbor-x tries its optional native accelerator `cbor-extract`, whose loader
 * (node-gyp-build, detect-libc) pulls in `child_process`.
 *
 * Three kinds of replacement, each limited to requests made from inside the named packages:
 * - LEAN_STUBS: a stand-in that throws UnavailableInAgentError if it is ever used (called,
 *   constructed, or a member called);
 * - LEAN_ABSENT: an optional dependency the package can do without; the request fails as if it were
 *   not installed, and the package takes its JavaScript path;
 * - LEAN_SHIMS: the one member the package reads, with the value it has in the agent.
 *
 * Two mechanisms apply the same tables: `installLeanRequires()` patches the CommonJS loader of this
 * process (`outpost agent` from dist/, before it imports dockerode, pino and MQTT.js;
 * `OUTPOST_AGENT_FULL_DEPS=1` turns it off there), and scripts/build-agent.ts resolves the same requests
 * to the same functions inside the shipped one-file bundle (dist/outpost-agent.cjs).
 */
import { createRequire } from 'node:module';
import { sep } from 'node:path';

/** Stubbed request → packages whose modules may receive the stub (their other requires are untouched). */
export const LEAN_STUBS: Readonly<Record<string, readonly string[]>> = {
  ssh2: ['docker-modem'],
  '@grpc/grpc-js': ['dockerode'],
  '@grpc/proto-loader': ['dockerode'],
  uuid: ['dockerode'],
  'tar-fs': ['dockerode'],
  '@balena/dockerignore': ['dockerode'],
  // Gzip of build contexts only (dockerode's util.prepareBuildContext, after tar-fs); the protocol
  // loads zlib itself on first use (envelope.ts), so an idle agent has no zlib at all.
  zlib: ['dockerode'],
  'worker-timers': ['mqtt'],
  // pino's transports (worker threads); the agent logs to stdout through sonic-boom.
  'thread-stream': ['pino'],
};

/**
 * Optional dependencies the agent runs without: the request throws MODULE_NOT_FOUND, which the package
 * handles. cbor-extract is cbor-x's native string extractor (speed on large documents; the agent decodes
 * messages of a few hundred bytes); loading it costs node-gyp-build, detect-libc and `child_process`.
 */
export const LEAN_ABSENT: Readonly<Record<string, readonly string[]>> = {
  'cbor-extract': ['cbor-x'],
};

/** Request → packages that get `leanShim(request)` instead of the module. */
export const LEAN_SHIMS: Readonly<Record<string, readonly string[]>> = {
  // pino/lib/tools.js reads `isMainThread` only (flush on exit from the main thread). The agent never
  // runs in a worker; the real module costs ~0.3 MB of RSS (worker, messaging, serdes internals).
  worker_threads: ['pino'],
  // sonic-boom calls assert(condition, message) once, on an argument; node's assert module loads its
  // error formatting, colours and tty.
  assert: ['sonic-boom'],
  // `debug` loggers of MQTT.js and docker-modem: silent unless DEBUG is set, when the real module loads.
  debug: ['mqtt', 'mqtt-packet', 'docker-modem'],
};

class AssertionError extends Error {
  override readonly name = 'AssertionError';
  readonly code = 'ERR_ASSERTION';
}

/** debug's API as its callers use it (`debug(ns)(fmt, …)`, `.enabled`, `.extend`), logging nothing. */
function silentDebug(): unknown {
  const logger = (namespace: string): unknown =>
    Object.assign(() => undefined, {
      namespace,
      enabled: false,
      log: () => undefined,
      extend: (sub: string, delimiter = ':') => logger(`${namespace}${delimiter}${sub}`),
      destroy: () => true,
    });
  return Object.assign(logger, {
    enabled: () => false,
    enable: () => undefined,
    disable: () => '',
    formatters: {},
  });
}

/** The shim for a LEAN_SHIMS request. */
export function leanShim(request: string): unknown {
  switch (request) {
    case 'worker_threads':
      return Object.freeze({ isMainThread: true });
    case 'assert':
      return (value: unknown, message?: string) => {
        if (!value) throw new AssertionError(message ?? 'assertion failed');
      };
    case 'debug':
      return process.env['DEBUG'] ? createRequire(import.meta.url)('debug') : silentDebug();
    default:
      throw new Error(`no lean shim for ${request}`);
  }
}

/**
 * `performance` inside the agent bundle (scripts/build-agent.ts substitutes it for the global): the
 * agent and lru-cache call only `performance.now()`, and the global's first use loads perf_hooks and
 * its timing internals (~0.2 MB RSS). `now()` is the same clock with the same origin (process start,
 * as `process.uptime()`); any other member comes from node's `performance`, loaded then.
 */
export const leanPerformance: { now(): number } = new Proxy(
  { now: (): number => process.uptime() * 1000 },
  {
    get: (target, p) => (p === 'now' ? target.now : Reflect.get(globalThis.performance, p)),
  },
);

export class UnavailableInAgentError extends Error {
  override readonly name = 'UnavailableInAgentError';
}

/** A stand-in module: any member is another stand-in; calling or constructing one throws. */
export function unavailable(what: string): unknown {
  const fail = (): never => {
    throw new UnavailableInAgentError(
      `${what} is not loaded in the agent (unix-socket Docker only; see docs/adr/0005-agent-memory.md); ` +
        'set OUTPOST_AGENT_FULL_DEPS=1 to load it',
    );
  };
  // A plain function (not an arrow) so the proxy can be constructed (`new Client()`), then throw.
  const target = function stub() {};
  return new Proxy(target, {
    get(_t, p) {
      if (p === '__esModule') return false;
      if (typeof p === 'symbol') return undefined;
      if (p === 'then') return undefined;
      return unavailable(`${what}.${p}`);
    },
    apply: fail,
    construct: fail,
  });
}

/** What a LEAN_ABSENT request throws: the error node's loader throws for a package that is not installed. */
export function absent(request: string): Error {
  return Object.assign(new Error(`Cannot find module '${request}' (left out of the agent: lean.ts)`), {
    code: 'MODULE_NOT_FOUND',
  });
}

interface CjsLoader {
  _load(request: string, parent: { filename?: string | null } | null | undefined, isMain: boolean): unknown;
}

let installed: { stubbed: Set<string> } | undefined;

/** True when `filename` is a file of one of `pkgs` (under node_modules/<pkg>/). */
export function fromPackage(
  filename: string | null | undefined,
  pkgs: readonly string[] | undefined,
): boolean {
  if (!filename || !pkgs) return false;
  const f = filename.split(sep).join('/');
  return pkgs.some((p) => f.includes(`/node_modules/${p}/`));
}

/**
 * Installs the stand-ins (idempotent). Returns the set of requests replaced so far (for tests and the
 * startup log). Must run before dockerode / MQTT.js / pino / cbor-x are first imported to have any effect.
 */
export function installLeanRequires(): ReadonlySet<string> {
  if (installed) return installed.stubbed;
  const state = { stubbed: new Set<string>() };
  installed = state;
  const Module = createRequire(import.meta.url)('node:module') as CjsLoader;
  const load = Module._load;
  Module._load = function leanLoad(request, parent, isMain) {
    const from = parent?.filename;
    if (fromPackage(from, LEAN_STUBS[request])) {
      state.stubbed.add(request);
      return unavailable(request);
    }
    if (fromPackage(from, LEAN_ABSENT[request])) {
      state.stubbed.add(request);
      throw absent(request);
    }
    if (fromPackage(from, LEAN_SHIMS[request])) {
      state.stubbed.add(request);
      return leanShim(request);
    }
    return load.call(this, request, parent, isMain);
  };
  return state.stubbed;
}

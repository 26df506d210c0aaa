/**
 * The agent's memory budget (DESIGN §7, I8; docs/adr/0005-agent-memory.md): keeps code the agent
 * never runs out of its process.
 *
 * dockerode 4 and docker-modem require, at load time, modules that only serve transports and features
 * the agent does not use: `ssh2` (Docker over SSH; it also instantiates WebAssembly at load, which
 * `--jitless` forbids), `@grpc/grpc-js` + `@grpc/proto-loader` (+ protobufjs) and `uuid` (BuildKit
 * sessions for `docker.buildImage`), `tar-fs` + `@balena/dockerignore` + `zlib` (build contexts), and MQTT.js
 * requires `worker-timers` (browser timers; Node uses native timers). Together that is ~13 MB of RSS.
 *
 * `installLeanRequires()` patches the CommonJS loader of this process only: those requests, when
 * made from inside those packages, get a stand-in that throws a clear error if it is ever used
 * (called, constructed, or a member called). Unix-socket Docker never touches them. Installed by
 * `outpost agent` before it imports dockerode and MQTT.js; `OUTPOST_AGENT_FULL_DEPS=1` turns it off.
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
};

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

interface CjsLoader {
  _load(request: string, parent: { filename?: string | null } | null | undefined, isMain: boolean): unknown;
}

let installed: { stubbed: Set<string> } | undefined;

function fromPackage(filename: string | null | undefined, pkgs: readonly string[]): boolean {
  if (!filename) return false;
  return pkgs.some((p) => filename.includes(`${sep}node_modules${sep}${p.split('/').join(sep)}${sep}`));
}

/**
 * Installs the stand-ins (idempotent). Returns the set of requests stubbed so far (for tests and the
 * startup log). Must run before dockerode / MQTT.js are first imported to have any effect.
 */
export function installLeanRequires(): ReadonlySet<string> {
  if (installed) return installed.stubbed;
  const state = { stubbed: new Set<string>() };
  installed = state;
  const Module = createRequire(import.meta.url)('node:module') as CjsLoader;
  const load = Module._load;
  Module._load = function leanLoad(request, parent, isMain) {
    const pkgs = LEAN_STUBS[request];
    if (pkgs && fromPackage(parent?.filename, pkgs)) {
      state.stubbed.add(request);
      return unavailable(request);
    }
    return load.call(this, request, parent, isMain);
  };
  return state.stubbed;
}

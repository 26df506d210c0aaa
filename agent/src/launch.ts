/**
 * How the agent is started (memory budget, DESIGN §7; measurements in docs/adr/0005-agent-memory.md,
 * 0006-agent-idle-memory.md, 0007-agent-bundle.md): the runtime settings and the entry point.
 * `bin/outpost-agent` (the shell launcher, which `exec`s node so no parent process stays resident)
 * applies them; `outpost up` spawns its local agent with the same settings;
 * test/agent/memory-launcher.test.ts checks the launcher says the same as this file.
 *
 * Settings:
 * - `--max-semi-space-size=1`: 1 MB young-generation semi-spaces (default up to 16 MB each).
 * - `--lite-mode`: no optimizing compilers and no executable memory at run time (implies `--jitless`,
 *   so no WebAssembly: lean.ts keeps ssh2's WebAssembly out), smaller feedback and bytecode.
 *   `--no-expose-wasm` says so explicitly (V8 warns on every start otherwise).
 * - `--max-old-space-size=64`: a hard bound on the heap (the idle live heap is ~10 MB); a leak ends
 *   in a restart by the supervisor rather than in the device swapping.
 * - `--v8-pool-size=1`: one V8 background thread instead of one per core.
 * - `MALLOC_ARENA_MAX=1`: one glibc malloc arena, not one per thread that ever allocated.
 * - `MALLOC_TRIM_THRESHOLD_=131072`: glibc's default trim threshold (128 KiB), pinned. Left dynamic,
 *   glibc raises it to twice the largest mmap'd block freed so far; V8 frees such blocks after compiling
 *   the bundle, and the ~4 MB it used for parsing then stayed in the process (0007-agent-bundle.md).
 * - `UV_THREADPOOL_SIZE=2`: the agent's few asynchronous fs/dns calls need no more.
 *
 * Entry point: the one-file bundle dist/outpost-agent.cjs (scripts/build-agent.ts, run by
 * `npm run build`). When it is missing, or older than the compiled dist/ (only tsc was run since), the
 * launcher warns on stderr and runs `dist/cli/main.js agent` instead: the same agent, a few MB more
 * RSS. `OUTPOST_AGENT_FULL_DEPS=1` also runs dist/cli/main.js (the bundle always has the lean
 * stand-ins of lean.ts compiled in; the unbundled CLI loads the real modules under that variable).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const AGENT_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=1',
  '--lite-mode',
  '--no-expose-wasm',
  '--max-old-space-size=64',
  '--v8-pool-size=1',
];

export const AGENT_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '1',
  MALLOC_TRIM_THRESHOLD_: '131072',
  UV_THREADPOOL_SIZE: '2',
};

const here = dirname(fileURLToPath(import.meta.url));
/** The checkout (or package) root: this file is agent/src/launch.ts, or dist/agent/src/launch.js. */
const ROOT =
  basename(resolve(here, '..', '..')) === 'dist'
    ? resolve(here, '..', '..', '..')
    : resolve(here, '..', '..');
export const DIST = join(ROOT, 'dist');
/** The shipped agent: everything `outpost agent` runs, in one minified CommonJS file. */
export const AGENT_BUNDLE = join(DIST, 'outpost-agent.cjs');
/** The unbundled CLI (tsc output): `node dist/cli/main.js agent …`. */
export const AGENT_MAIN = join(DIST, 'cli', 'main.js');

/** True when some compiled .js file under `dir` is newer than `t` (ms). */
function newerJs(dir: string, t: number): boolean {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() ? newerJs(p, t) : e.name.endsWith('.js') && statSync(p).mtimeMs > t) return true;
  }
  return false;
}

export interface AgentEntry {
  /** The script node runs, followed by `args`. */
  readonly script: string;
  readonly args: readonly string[];
  readonly bundled: boolean;
  /** Why the bundle is not used (the launcher prints it to stderr), when it is not. */
  readonly warning?: string;
}

/**
 * The entry point bin/outpost-agent picks, by the same rules, for callers that spawn the agent from
 * JavaScript (node `...AGENT_NODE_FLAGS, entry.script, ...entry.args` with AGENT_ENV). Throws when
 * there is no build at all. `dist`: the build folder (tests).
 */
export function agentEntry(
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  dist: string = DIST,
): AgentEntry {
  const bundle = join(dist, 'outpost-agent.cjs');
  const main = join(dist, 'cli', 'main.js');
  let warning: string | undefined;
  if (env['OUTPOST_AGENT_FULL_DEPS'] !== '1') {
    if (!existsSync(bundle)) warning = `${bundle} is missing (\`npm run build\` makes it)`;
    else if (newerJs(dist, statSync(bundle).mtimeMs))
      warning = `${bundle} is older than the compiled dist/ (\`npm run build\` rebuilds it)`;
    else return { script: bundle, args: [...args], bundled: true };
  }
  if (!existsSync(main)) throw new Error(`no agent build in ${dist}: run \`npm run build\``);
  return {
    script: main,
    args: ['agent', ...args],
    bundled: false,
    ...(warning ? { warning: `${warning}; running ${main} agent instead, which uses more memory` } : {}),
  };
}

/**
 * The runtime settings shipped with the agent (memory budget, DESIGN §7; measurements in
 * docs/adr/0005-agent-memory.md). `bin/outpost-agent` (the shell launcher, which `exec`s node so no
 * parent process stays resident) and `outpost up` (which spawns its local agent) both apply them;
 * test/agent/memory-launcher.test.ts checks the launcher says the same.
 *
 * - `--max-semi-space-size=1`: 1 MB young-generation semi-spaces (default up to 16 MB each).
 * - `--lite-mode`: no optimizing compilers and no executable memory at run time (implies `--jitless`,
 *   so no WebAssembly: lean.ts keeps ssh2's WebAssembly out), smaller feedback and bytecode.
 *   `--no-expose-wasm` says so explicitly (V8 warns on every start otherwise).
 * - `--max-old-space-size=64`: a hard bound on the heap (the idle live heap is ~10 MB); a leak ends
 *   in a restart by the supervisor rather than in the device swapping.
 * - `--v8-pool-size=1`: one V8 background thread instead of one per core.
 * - `MALLOC_ARENA_MAX=1`: one glibc malloc arena, not one per thread that ever allocated.
 * - `UV_THREADPOOL_SIZE=2`: the agent's few asynchronous fs/dns calls need no more.
 */
export const AGENT_NODE_FLAGS: readonly string[] = [
  '--max-semi-space-size=1',
  '--lite-mode',
  '--no-expose-wasm',
  '--max-old-space-size=64',
  '--v8-pool-size=1',
];

export const AGENT_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '1',
  UV_THREADPOOL_SIZE: '2',
};

/**
 * Agent benchmark (DESIGN §7, I8): the agent's RSS idle, while applying 10 stacks, and its slope over a
 * soak — the compiled agent with the real DockerRuntime on the private engine (agent-run.ts), once
 * through the shipped launcher `bin/outpost-agent` (V8 and malloc settings of agent/src/launch.ts) and
 * once as plain `node dist/cli/main.js agent` (same code, no settings). Also envelope verification
 * rates under both, since `--lite-mode` trades speed for memory.
 *
 * Needs `dist/` and the agent bundle current: when any agent, protocol or cli source is newer than
 * either, this section runs `npm run build` first (bench.sh does not build). The launcher runs the
 * bundle (dist/outpost-agent.cjs); the run fails if it fell back to dist/cli/main.js. Needs the private Docker engine
 * (DOCKER_HOST, else `scripts/docker-engine.sh` is asked for it) with outpost-test/web:1.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_BUNDLE, AGENT_ENV, AGENT_NODE_FLAGS } from '../../agent/src/launch.js';
import { type AgentRunResult, REPO, runAgentOnce } from './agent-run.js';
import { type BenchOptions, median, type Row, type Section } from './types.js';

const IDLE_MB = 50;
const APPLY_MB = 64;
/** Growth over the soak that still counts as flat (noise of page-granular RSS and GC timing). */
const SLOPE_KB_MIN = 64;

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

function mtime(file: string): number {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

/** `npm run build` (tsc, then the agent bundle) when dist/ or the bundle is older than the sources. */
function ensureBuilt(log: (s: string) => void): void {
  const src = Math.max(
    ...['agent/src', 'protocol/src', 'cli', 'certs/src'].map((d) => newest(join(REPO, d))),
    mtime(join(REPO, 'scripts', 'build-agent.ts')),
  );
  const built = Math.min(mtime(join(REPO, 'dist', 'agent', 'src', 'cli.js')), mtime(AGENT_BUNDLE));
  if (built >= src) return;
  log('  dist/ or the agent bundle is older than the sources: npm run build');
  execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: ['ignore', 2, 2] });
}

function dockerHost(): string {
  if (process.env['DOCKER_HOST']?.startsWith('unix://')) return process.env['DOCKER_HOST'];
  const out = execFileSync('bash', [join(REPO, 'scripts', 'docker-engine.sh')], {
    cwd: REPO,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const m = /DOCKER_HOST=(\S+)/.exec(out);
  if (!m?.[1]) throw new Error('agent bench: no private Docker engine (scripts/docker-engine.sh)');
  return m[1];
}

interface Rate {
  readonly perSec: number;
  readonly perCpuSec: number;
}

/**
 * Envelope verifications (stack.apply, openCommand) or ack signatures (encodeAck) per second, wall clock
 * and per CPU second of the process, under the given node flags.
 */
function opRate(
  flags: readonly string[],
  env: Readonly<Record<string, string>>,
  op: 'verify' | 'sign',
): Rate {
  const r = spawnSync(
    process.execPath,
    [...flags, '--import', 'tsx', join(import.meta.dirname, 'agent-verify.ts'), '3', op],
    { cwd: REPO, encoding: 'utf8', env: { ...process.env, ...env } },
  );
  if (r.status !== 0) throw new Error(`agent-verify failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Rate;
}

const mb = (kb: number) => kb / 1024;

/**
 * The floor: node itself under the agent's flags and environment, running nothing (an empty event loop
 * kept alive), after 2 s. VmRSS / RssAnon / RssFile in kB.
 */
async function bareNode(): Promise<{ rss: number; anon: number; file: number }> {
  const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, '-e', 'setInterval(() => {}, 1e6)'], {
    env: { ...process.env, ...AGENT_ENV },
    stdio: 'ignore',
  });
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const st = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0);
    return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
  } finally {
    child.kill('SIGKILL');
  }
}

export async function run(opts: BenchOptions): Promise<Section> {
  const log = (s: string) => void process.stderr.write(`${s}\n`);
  ensureBuilt(log);
  const host = dockerHost();
  const runs = opts.full ? Math.max(1, Math.min(opts.runs, 3)) : 1;
  // The launcher's soak: 5 min (quick) or 15 min (--full), of which the first 2 min are warm-up, left out
  // of the slope (agent-run.ts). A 60 s soak could not tell warm-up from growth (docs/adr/0007).
  // OUTPOST_BENCH_AGENT_SOAK_MIN overrides it (a long soak, e.g. 60, to see where RSS settles).
  const soakMin = Number(process.env['OUTPOST_BENCH_AGENT_SOAK_MIN'] ?? Number.NaN);
  const soakMs = soakMin > 2 ? soakMin * 60_000 : opts.full ? 15 * 60_000 : 5 * 60_000;
  const warmupMs = 2 * 60_000;
  const plainSoakMs = 60_000;
  const results: Record<'launcher' | 'plain', AgentRunResult[]> = { launcher: [], plain: [] };
  for (let i = 0; i < runs; i++) {
    for (const mode of ['launcher', 'plain'] as const) {
      const r = await runAgentOnce({
        mode,
        dockerHost: host,
        image: 'outpost-test/web:1',
        stacks: 10,
        idleSettleMs: 10_000,
        idleSampleMs: 10_000,
        // The plain run is the comparison: its soak is short (60 s).
        soakMs: mode === 'launcher' ? soakMs : plainSoakMs,
        soakWarmupMs: mode === 'launcher' ? warmupMs : plainSoakMs / 4,
        reapply: 3,
        reapplyEveryMs: 15_000,
        log,
      });
      // The launcher must have run the bundle (it falls back to dist/cli/main.js with a warning).
      if (mode === 'launcher' && r.entry !== AGENT_BUNDLE)
        throw new Error(`bin/outpost-agent ran ${r.entry}, not the bundle ${AGENT_BUNDLE}`);
      results[mode].push(r);
    }
  }
  const bare: Awaited<ReturnType<typeof bareNode>>[] = [];
  for (let i = 0; i < opts.runs; i++) bare.push(await bareNode());
  const verify = { launcher: [] as Rate[], plain: [] as Rate[] };
  const sign = { launcher: [] as Rate[], plain: [] as Rate[] };
  for (let i = 0; i < opts.runs; i++) {
    verify.launcher.push(opRate(AGENT_NODE_FLAGS, AGENT_ENV, 'verify'));
    verify.plain.push(opRate([], {}, 'verify'));
    sign.launcher.push(opRate(AGENT_NODE_FLAGS, AGENT_ENV, 'sign'));
    sign.plain.push(opRate([], {}, 'sign'));
  }

  const rows: Row[] = [];
  for (const mode of ['launcher', 'plain'] as const) {
    const rs = results[mode];
    const shipped = mode === 'launcher';
    const note = shipped ? 'bin/outpost-agent' : 'node dist/cli/main.js agent, no settings';
    const idle = median(rs.map((r) => mb(r.idleKb)));
    const peak = median(rs.map((r) => mb(r.applyPeakKb)));
    const slope = median(rs.map((r) => r.soakSlopeKbPerMin));
    rows.push(
      {
        name: `${mode}: RSS idle, connected`,
        value: idle,
        unit: 'MB',
        note,
        ...(shipped ? { target: `≤ ${IDLE_MB} MB`, ok: idle <= IDLE_MB } : {}),
      },
      ...(shipped
        ? [
            {
              name: `${mode}: idle RSS, file-backed (RssFile: node binary, shared libraries, better-sqlite3)`,
              value: median(rs.map((r) => mb(r.idleFileKb))),
              unit: 'MB',
            },
            {
              name: `${mode}: idle RSS, anonymous (RssAnon: V8 heap, malloc, stacks)`,
              value: median(rs.map((r) => mb(r.idleAnonKb))),
              unit: 'MB',
            },
            {
              name: `${mode}: idle PSS (smaps_rollup; file pages shared with the other node processes here count in part)`,
              value: median(rs.map((r) => mb(r.idlePssKb))),
              unit: 'MB',
            },
            {
              name: 'bare node, same flags, empty event loop: RSS (file-backed / anonymous)',
              value: median(bare.map((b) => mb(b.rss))),
              unit: 'MB',
              note: `${median(bare.map((b) => mb(b.file))).toFixed(1)} / ${median(bare.map((b) => mb(b.anon))).toFixed(1)} MB`,
            },
          ]
        : []),
      {
        name: `${mode}: RSS peak applying 10 stacks`,
        value: peak,
        unit: 'MB',
        ...(shipped ? { target: `≤ ${APPLY_MB} MB`, ok: peak <= APPLY_MB } : {}),
      },
      {
        name: `${mode}: time to apply 10 stacks`,
        value: median(rs.map((r) => r.applyMs)),
        unit: 'ms',
      },
      {
        name: `${mode}: RSS slope over the soak`,
        value: slope,
        unit: 'KB/min',
        note: `${shipped ? `${soakMs / 60_000} min, fitted after ${warmupMs / 60_000} min warm-up` : `${plainSoakMs / 1000} s, fitted after ${plainSoakMs / 4000} s`}, heartbeats every 2 s, 3 re-applies every 15 s; first/second half of the fitted part ${rs
          .map((r) => `${mb(r.soakStartKb).toFixed(1)}/${mb(r.soakEndKb).toFixed(1)} MB`)
          .join(', ')}`,
        // DESIGN §7 says "no growth over a soak"; the threshold is the noise allowance, in the row's unit.
        ...(shipped ? { target: `no growth (≤ ${SLOPE_KB_MIN} KB/min)`, ok: slope <= SLOPE_KB_MIN } : {}),
      },
      {
        name: `${mode}: envelope verifications (stack.apply), wall clock`,
        value: median(verify[mode].map((r) => r.perSec)),
        unit: '/s',
      },
      {
        name: `${mode}: envelope verifications per CPU second`,
        value: median(verify[mode].map((r) => r.perCpuSec)),
        unit: '/s',
      },
      {
        name: `${mode}: ack signatures (encodeAck) per CPU second`,
        value: median(sign[mode].map((r) => r.perCpuSec)),
        unit: '/s',
      },
    );
  }
  return {
    title: 'Agent memory',
    method:
      'The shipped agent — the one-file bundle dist/outpost-agent.cjs (`npm run build`, scripts/build-agent.ts; ' +
      'docs/adr/0007-agent-bundle.md) run by bin/outpost-agent — as a child process with the real DockerRuntime ' +
      'on the private engine, a loopback aedes broker and a minimal signing controller (scripts/bench/agent-run.ts). ' +
      'RSS is VmRSS of the agent process (/proc/<pid>/status; the launcher `exec`s node, so that pid is node): ' +
      'idle = median over 10 s after a 10 s settle once subscribed; peak = highest sample (every 100 ms) while 10 ' +
      '`stack.apply` commands (outpost-test/web:1 by tag, --allow-tags) run until all are acked applied; ' +
      'slope = least-squares fit of 1 s samples over the soak after its warm-up (the launcher: a 5 min soak, ' +
      '15 min with --full, of which the first 2 min are left out — the heap and malloc settling after the 10 ' +
      'applies and the first re-applies compiling their code paths; a 60 s soak could not tell that from growth). ' +
      '`launcher` is bin/outpost-agent with the ' +
      `shipped settings (${AGENT_NODE_FLAGS.join(' ')}, ${Object.entries(AGENT_ENV)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}); \`plain\` is the unbundled CLI (dist/cli/main.js agent) under node defaults. ` +
      'About 39 MB of the idle RSS are file-backed clean pages of the node binary and its libraries (bare node ' +
      'under the same flags: row above; docs/adr/0006-agent-idle-memory.md has the breakdown by ELF section), so ' +
      'the budget is won or lost on ~10 MB of anonymous memory. The bundle (one minified CommonJS file: no ES ' +
      'module loader, one retained source string, TypeBox validators generated at build time instead of compiled ' +
      'at run time, lean stand-ins for modules the agent never runs) brought idle from 55.4 to ~49 MB. PSS (row ' +
      'above) is what the agent costs the device beyond pages another node process already holds; on a device ' +
      'where the agent is the only node process, PSS ≈ RSS. Verification and signing rates per CPU second (user + ' +
      'system time of the process, which includes V8 background compilation) are the CPU cost of the flags; ' +
      'wall-clock rates on this shared machine (2 cores, other CI and benchmarks running) mostly measure the ' +
      'other processes.',
    rows,
  };
}

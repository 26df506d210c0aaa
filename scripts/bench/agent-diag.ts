/**
 * Agent memory diagnostics (not a bench section): runs the compiled agent like agent-run.ts (real
 * DockerRuntime, loopback broker, minimal controller) under given node flags and prints what its idle
 * RSS is made of — /proc/<pid>/status (VmRSS, RssAnon, RssFile), smaps_rollup (Pss), the largest
 * mappings from /proc/<pid>/smaps grouped by file, and (through a preloaded CommonJS module, PRELOAD
 * below, so that diagnosing does not load node's ES module loader into the agent) the agent's own
 * process.memoryUsage(), v8 heap spaces and loaded modules on SIGUSR2.
 *
 *   npx tsx scripts/bench/agent-diag.ts [--plain] [--flags "…"] [--env K=V,K=V] [--stacks N] [--main FILE]
 *                                        [--soak MIN [--warmup MIN]]
 *
 * `--soak MIN` (docs/adr/0007-agent-bundle.md): after the idle report, applies 10 stacks and soaks MIN
 * minutes like the bench (heartbeats every 2 s, 3 re-applies every 15 s) with `--expose-gc` added; every
 * 15 s the agent forces a full GC and records its live heap and RssAnon, so that growth of the V8 heap
 * can be told from malloc settling. Prints, per soak minute, the lowest RssAnon after GC and the live heap
 * range, and the RSS slope fitted after the warm-up (default 2 min).
 *
 * Without --plain/--flags the agent runs under the shipped settings (agent/src/launch.ts); without --main
 * it runs the shipped bundle (dist/outpost-agent.cjs, `npm run build`); `--main dist/cli/main.js` runs
 * the unbundled CLI.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AGENT_BUNDLE, AGENT_ENV, AGENT_NODE_FLAGS } from '../../agent/src/launch.js';
import { type AgentRunResult, runAgentOnce } from './agent-run.js';

/**
 * Preloaded into the agent (`node --require`): on SIGUSR2 writes the process's own view of its memory
 * to $OUTPOST_DIAG_OUT (JSON): process.memoryUsage(), V8 heap spaces and code statistics, the CommonJS
 * modules loaded (require.cache) and the built-in modules loaded (process.moduleLoadList).
 */
const PRELOAD = `'use strict';
const { writeFileSync } = require('node:fs');
const v8 = require('node:v8');
const samples = process.env.OUTPOST_DIAG_SAMPLES;
if (samples && typeof globalThis.gc === 'function') {
  setInterval(() => {
    globalThis.gc();
    const st = require('node:fs').readFileSync('/proc/self/status', 'utf8');
    const anon = Number(/^RssAnon:\\s+(\\d+) kB/m.exec(st)?.[1] ?? 0);
    const m = process.memoryUsage();
    require('node:fs').appendFileSync(samples, JSON.stringify({ t: Date.now(), anonKb: anon, heapUsed: m.heapUsed, external: m.external }) + '\\n');
  }, 15000).unref();
}
process.on('SIGUSR2', () => {
  const out = process.env.OUTPOST_DIAG_OUT;
  if (!out) return;
  const spaces = Object.fromEntries(
    v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]),
  );
  writeFileSync(
    out,
    JSON.stringify({
      memoryUsage: process.memoryUsage(),
      heap: v8.getHeapStatistics(),
      code: v8.getHeapCodeStatistics(),
      spaces,
      cjs: Object.keys(require.cache),
      builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
    }),
  );
});
`;

/** VmRSS, RssAnon, RssFile, RssShmem (kB) of a process. */
export function statusKb(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** Pss and friends (kB) from smaps_rollup. */
export function rollupKb(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m =
      /^(Rss|Pss|Pss_Anon|Pss_File|Shared_Clean|Private_Clean|Private_Dirty|Anonymous):\s+(\d+) kB/.exec(
        line,
      );
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** Resident kB per mapping name (file path, [heap], [anon], …), largest first. */
export function smapsByName(pid: number): [string, number][] {
  const by = new Map<string, number>();
  let name = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      name = `${head[2] || '[anon]'} ${head[1]}`;
      continue;
    }
    const m = /^Rss:\s+(\d+) kB/.exec(line);
    if (m) by.set(name, (by.get(name) ?? 0) + Number(m[1]));
  }
  return [...by].sort((a, b) => b[1] - a[1]);
}

/**
 * Resident pages of one mapped file (the node binary) by ELF section, from /proc/<pid>/pagemap (root
 * only: bit 63 = present). Returns [section, kB] largest first.
 */
export function residentBySection(pid: number, file: string): [string, number][] {
  const sections: { name: string; off: number; end: number }[] = [];
  for (const line of execFileSync('readelf', ['-SW', file], { encoding: 'utf8' }).split('\n')) {
    const m = /^\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)/.exec(line);
    if (m)
      sections.push({
        name: m[1]!,
        off: Number.parseInt(m[2]!, 16),
        end: Number.parseInt(m[2]!, 16) + Number.parseInt(m[3]!, 16),
      });
  }
  const by = new Map<string, number>();
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \S+\s+(.*)$/.exec(line);
      if (!m || m[5] !== file) continue;
      const start = Number.parseInt(m[1]!, 16);
      const end = Number.parseInt(m[2]!, 16);
      const off = Number.parseInt(m[4]!, 16);
      const pages = (end - start) / 4096;
      const buf = Buffer.alloc(pages * 8);
      readSync(fd, buf, 0, buf.length, (start / 4096) * 8);
      for (let i = 0; i < pages; i++) {
        if (!(buf.readBigUInt64LE(i * 8) >> 63n)) continue;
        const fo = off + i * 4096;
        const sec = sections.find((s) => fo < s.end && fo + 4096 > s.off);
        const k = `${sec?.name ?? '(headers)'} ${m[3]}`;
        by.set(k, (by.get(k) ?? 0) + 4);
      }
    }
  } finally {
    closeSync(fd);
  }
  return [...by].sort((a, b) => b[1] - a[1]);
}

const MB = (b: number) => `${(b / 2 ** 20).toFixed(1)}`;

/** The agent's own view, written by the preload on SIGUSR2. */
function diag(file: string): string {
  let d: {
    memoryUsage: Record<string, number>;
    heap: Record<string, number>;
    code: Record<string, number>;
    spaces: Record<string, { size: number; used: number }>;
    cjs: string[];
    builtins: string[];
  };
  try {
    d = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return '(no diagnostics from the agent)';
  }
  const pkgs = new Map<string, number>();
  for (const f of d.cjs) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f);
    const k = m?.[1] ?? '(own)';
    pkgs.set(k, (pkgs.get(k) ?? 0) + 1);
  }
  return [
    `memoryUsage: ${Object.entries(d.memoryUsage)
      .map(([k, v]) => `${k} ${MB(v)}`)
      .join(', ')} MB`,
    `heap: total ${MB(d.heap['total_heap_size']!)} used ${MB(d.heap['used_heap_size']!)} malloced ${MB(d.heap['malloced_memory']!)} peak-malloced ${MB(d.heap['peak_malloced_memory']!)} external ${MB(d.heap['external_memory']!)} MB`,
    `code: ${Object.entries(d.code)
      .map(([k, v]) => `${k} ${MB(v)}`)
      .join(', ')} MB`,
    `spaces (size/used MB): ${Object.entries(d.spaces)
      .map(([k, v]) => `${k} ${MB(v.size)}/${MB(v.used)}`)
      .join(', ')}`,
    `CommonJS modules: ${d.cjs.length} — ${[...pkgs].map(([k, n]) => `${k} ${n}`).join(', ')}`,
    `built-ins: ${d.builtins.join(' ')}`,
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      plain: { type: 'boolean' },
      flags: { type: 'string' },
      env: { type: 'string' },
      stacks: { type: 'string' },
      settle: { type: 'string' },
      snapshot: { type: 'boolean' },
      main: { type: 'string' },
      soak: { type: 'string' },
      warmup: { type: 'string' },
    },
  });
  const soakMs = Number(values.soak ?? 0) * 60_000;
  const warmupMs = Number(values.warmup ?? 2) * 60_000;
  const samplesOut = join(tmpdir(), `outpost-agent-diag-samples-${process.pid}.jsonl`);
  writeFileSync(samplesOut, '');
  const host = process.env['DOCKER_HOST'] ?? 'unix:///work/main/.tmp/docker/docker.sock';
  const flags = values.plain
    ? []
    : values.flags !== undefined
      ? values.flags.split(/\s+/).filter(Boolean)
      : [...AGENT_NODE_FLAGS];
  const env: Record<string, string> = values.plain ? {} : { ...AGENT_ENV };
  for (const kv of (values.env ?? '').split(',').filter(Boolean)) {
    const [k, v = ''] = kv.split('=');
    env[k!] = v;
  }
  const preload = join(tmpdir(), `outpost-agent-diag-preload-${process.pid}.cjs`);
  writeFileSync(preload, PRELOAD);
  const log = (s: string) => void process.stderr.write(`${s}\n`);
  let report = '';
  const diagOut = join(tmpdir(), `outpost-agent-diag-${process.pid}.json`);
  await runAgentOnce({
    mode: 'plain',
    main: values.main ?? AGENT_BUNDLE,
    nodeFlags: [
      ...flags,
      ...(values.snapshot ? ['--heapsnapshot-signal=SIGUSR1', `--diagnostic-dir=${tmpdir()}`] : []),
      ...(soakMs > 0 ? ['--expose-gc'] : []),
      '--require',
      preload,
    ],
    extraEnv: {
      ...env,
      OUTPOST_DIAG_OUT: diagOut,
      ...(soakMs > 0 ? { OUTPOST_DIAG_SAMPLES: samplesOut } : {}),
    },
    dockerHost: host,
    image: 'outpost-test/web:1',
    stacks: soakMs > 0 ? 10 : Number(values.stacks ?? 0),
    idleSettleMs: Number(values.settle ?? 10_000),
    idleSampleMs: 4000,
    soakMs,
    soakWarmupMs: warmupMs,
    reapply: soakMs > 0 ? 3 : 0,
    reapplyEveryMs: soakMs > 0 ? 15_000 : 60_000,
    log,
    onIdle: async (pid) => {
      const st = statusKb(pid);
      const ru = rollupKb(pid);
      process.kill(pid, 'SIGUSR2');
      if (values.snapshot) process.kill(pid, 'SIGUSR1');
      await new Promise((r) => setTimeout(r, 1500));
      const top = smapsByName(pid)
        .slice(0, 14)
        .map(([n, kb]) => `  ${(kb / 1024).toFixed(1).padStart(6)} MB  ${n}`)
        .join('\n');
      report = [
        `flags: ${flags.join(' ')}  env: ${JSON.stringify(env)}`,
        `status: ${Object.entries(st)
          .map(([k, v]) => `${k} ${(v / 1024).toFixed(1)}`)
          .join(', ')} MB`,
        `smaps_rollup: ${Object.entries(ru)
          .map(([k, v]) => `${k} ${(v / 1024).toFixed(1)}`)
          .join(', ')} MB`,
        'largest mappings (Rss):',
        top,
        `node binary resident by section: ${residentBySection(
          pid,
          process.execPath.startsWith('/usr') ? process.execPath : '/usr/bin/node',
        )
          .map(([n, kb]) => `${n} ${(kb / 1024).toFixed(1)}`)
          .join(', ')} MB`,
        diag(diagOut),
      ].join('\n');
    },
  }).then((r) => {
    process.stdout.write(`${report}\nidle VmRSS median ${(r.idleKb / 1024).toFixed(1)} MB\n`);
    if (soakMs > 0) process.stdout.write(soakReport(r, samplesOut, warmupMs));
  });
}

/** Per soak minute: lowest RSS, lowest RssAnon after a forced GC, live heap range; the fitted slope. */
function soakReport(r: AgentRunResult, samplesFile: string, warmupMs: number): string {
  const end = Date.now();
  const soakMin = r.soak.at(-1)?.t ?? 0;
  const gc = readFileSync(samplesFile, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { t: number; anonKb: number; heapUsed: number })
    // Soak minute of each GC sample: the soak ended (about) now.
    .map((x) => ({ ...x, min: soakMin - (end - x.t) / 60_000 }))
    .filter((x) => x.min >= 0);
  const lines = [
    `soak ${soakMin.toFixed(1)} min: minute, lowest RSS, lowest RssAnon after GC, live heap after GC`,
  ];
  for (let m = 0; m < Math.ceil(soakMin); m++) {
    const rss = r.soak.filter((x) => x.t >= m && x.t < m + 1).map((x) => x.rssKb);
    const g = gc.filter((x) => x.min >= m && x.min < m + 1);
    const mb = (kb: number) => (kb / 1024).toFixed(2);
    const heap = g.map((x) => x.heapUsed / 2 ** 20);
    lines.push(
      `  ${m}  ${rss.length ? mb(Math.min(...rss)) : '-'} MB  ${g.length ? mb(Math.min(...g.map((x) => x.anonKb))) : '-'} MB  ${
        heap.length ? `${Math.min(...heap).toFixed(2)}–${Math.max(...heap).toFixed(2)}` : '-'
      } MB`,
    );
  }
  lines.push(
    `RSS slope fitted after ${warmupMs / 60_000} min: ${r.soakSlopeKbPerMin.toFixed(0)} KB/min (halves ${(
      r.soakStartKb / 1024
    ).toFixed(1)} / ${(r.soakEndKb / 1024).toFixed(1)} MB)`,
  );
  return `${lines.join('\n')}\n`;
}

if (process.argv[1]?.endsWith('agent-diag.ts'))
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });

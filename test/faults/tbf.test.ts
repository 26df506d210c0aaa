/**
 * Scenario (c) over a kernel-shaped link: the whole system in a private network namespace whose
 * loopback is shaped by `tc qdisc add dev lo root tbf rate 64kbit` (MTU 1500, a 3000-byte bucket),
 * so every byte between broker, controller, proxies and agents crosses the kernel's token bucket,
 * not only the fault proxy's user-space one.
 *
 * The driver (harness/tbf-main.ts, run with `ip netns exec`) starts a FaultSystem with two sites,
 * deploys a ~3 KB revision and several more, blackholes one site's link for a few seconds while a
 * revision is deployed, then clamps the kernel's rate to 8 bit/s for a few seconds while another is
 * on its way. Asserted: every command final and the ledger clean (I1, I2, I3: applied exactly once,
 * in order), the revisions deployed during both blackouts applied afterwards, and the shaper really
 * in the path — the kernel's qdisc sent at least twice the bytes the proxies forwarded (each proxied
 * byte crosses lo twice: agent → proxy → broker) and held packets back (overlimits). No assertion on
 * speed.
 *
 * Needs root, `ip` and `tc` (Debian: iproute2) and permission to make a network namespace; skipped
 * with the reason printed otherwise. The namespace and every process in it are removed at the end.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, sleep } from '../helpers/index.js';
import { expectCleanLedger } from './harness/assert.js';
// Types only: importing the driver would run it.
import type { TbfReport, TbfSpec } from './harness/tbf-main.js';

const TBF = ['rate', '64kbit', 'burst', '3000', 'latency', '1000ms'];
const DRIVER_MS = 170_000;

function sh(cmd: string, args: readonly string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 15_000 });
  return {
    ok: r.status === 0,
    out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim(),
  };
}

/** Why the scenario cannot run here, or undefined. Probes with a throwaway namespace. */
function notPermitted(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'not root (ip netns and tc need CAP_SYS_ADMIN/CAP_NET_ADMIN)';
  for (const [cmd, arg] of [
    ['ip', '-V'],
    ['tc', '-V'],
  ] as const)
    if (!sh(cmd, [arg]).ok) return `\`${cmd}\` not found (Debian: apt-get install -y iproute2)`;
  const probe = `outpost-tbf-probe-${process.pid}`;
  const add = sh('ip', ['netns', 'add', probe]);
  if (!add.ok) return `ip netns add not permitted: ${add.out}`;
  try {
    const lo = sh('ip', ['-n', probe, 'link', 'set', 'lo', 'up']);
    if (!lo.ok) return `lo in a namespace: ${lo.out}`;
    const tc = sh('ip', ['netns', 'exec', probe, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', ...TBF]);
    if (!tc.ok) return `tc tbf in a namespace not permitted: ${tc.out}`;
  } finally {
    sh('ip', ['netns', 'del', probe]);
  }
  return undefined;
}

const reason = notPermitted();
if (reason) process.stdout.write(`tbf.test.ts skipped: ${reason}\n`);

/** SIGKILLs every process left in the namespace (all started by this test), then deletes it. */
async function removeNamespace(ns: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const pids = sh('ip', ['netns', 'pids', ns])
      .out.split(/\s+/)
      .map(Number)
      .filter((p) => Number.isInteger(p) && p > 0);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await sleep(250);
  }
  const del = sh('ip', ['netns', 'del', ns]);
  if (!del.ok && !/No such file/.test(del.out)) process.stderr.write(`ip netns del ${ns}: ${del.out}\n`);
}

/** Runs the driver in the namespace; resolves with its report line (bounded; kills it on timeout). */
function runDriver(ns: string, spec: TbfSpec): Promise<{ report: TbfReport | undefined; output: string }> {
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  const child: ChildProcess = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '--import',
      tsx,
      'test/faults/harness/tbf-main.ts',
      JSON.stringify(spec),
    ],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    output += d;
  });
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, DRIVER_MS + 15_000);
    child.once('close', () => {
      clearTimeout(timer);
      const line = output.split('\n').find((l) => l.startsWith('TBF-REPORT '));
      resolve({
        report: line ? (JSON.parse(line.slice('TBF-REPORT '.length)) as TbfReport) : undefined,
        output,
      });
    });
  });
}

describe('(c) a kernel-shaped link: tc tbf 64 kbit/s on lo inside a network namespace', () => {
  it.skipIf(reason !== undefined)(
    'a ~3 KB revision and more, a proxy blackhole and a kernel blackout: applied exactly once, in order, through the shaper',
    async () => {
      const ns = `outpost-tbf-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
      try {
        for (const args of [
          ['netns', 'add', ns],
          ['-n', ns, 'link', 'set', 'lo', 'mtu', '1500', 'up'],
          ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', ...TBF],
        ]) {
          const r = sh('ip', args);
          expect(r.ok, `ip ${args.join(' ')}: ${r.out}`).toBe(true);
        }
        const spec: TbfSpec = {
          sites: ['t1', 't2'],
          tbf: TBF,
          more: 4,
          blackoutMs: 4_000,
          deadlineMs: DRIVER_MS,
        };
        const { report, output } = await runDriver(ns, spec);
        expect(report, `no report from the driver:\n${output.slice(-4_000)}`).toBeDefined();
        const r = report!;
        expect(r.ok, `${r.error}\n${output.slice(-4_000)}`).toBe(true);
        // The kernel's view, read here as well (the qdisc outlives the driver).
        const after = sh('ip', ['netns', 'exec', ns, 'tc', '-s', 'qdisc', 'show', 'dev', 'lo']).out;
        const proxied = Object.values(r.proxies).reduce((n, p) => n + p.up + p.down, 0);
        process.stdout.write(
          `tbf: ${JSON.stringify({ ms: r.ms, proxies: r.proxies, proxied, qdisc: r.qdiscAfter, proxyBlackout: r.proxyBlackout, kernelBlackout: r.kernelBlackout, byStatus: r.ledger?.byStatus })}\n${after}\n`,
        );

        // Exactly once, in order, nothing lost.
        expectCleanLedger(r.ledger!);
        expect(r.ledger!.open).toEqual([]);
        // The revisions deployed during the blackouts were held, then applied.
        expect(r.proxyBlackout?.heldDuring).toBe(true);
        expect(r.kernelBlackout).toBeDefined();
        // The shaper was in the path: a tbf root qdisc that sent every proxied byte twice (plus
        // headers and the controller's own traffic) and held packets back at least once.
        expect(r.qdiscBefore?.kind).toBe('tbf');
        expect(r.qdiscAfter?.kind).toBe('tbf');
        expect(proxied).toBeGreaterThan(3_000 * 2);
        expect(r.qdiscAfter!.bytes - r.qdiscBefore!.bytes).toBeGreaterThanOrEqual(2 * proxied);
        expect(r.qdiscAfter!.overlimits).toBeGreaterThan(0);
      } finally {
        await removeNamespace(ns);
      }
      expect(sh('ip', ['netns', 'list']).out).not.toContain(ns);
    },
    DRIVER_MS + 60_000,
  );
});

/**
 * The tbf scenario's driver (test/faults/tbf.test.ts), run inside a private network namespace whose
 * loopback the test has shaped with `tc qdisc add dev lo root tbf rate 64kbit ...`:
 *
 *   ip netns exec <ns> node --import tsx test/faults/harness/tbf-main.ts '<TbfSpec JSON>'
 *
 * Every process of the system (broker, controller, agents, the fault proxies and this driver's own
 * REST calls) inherits the namespace, so every byte between them crosses the kernel's token bucket.
 * It starts a FaultSystem, deploys a ~3 KB revision to every site and then several more, blacks out
 * one site's link (the proxy's blackhole) and then the whole shaped link (`tc qdisc change` to
 * 8 bit/s) while a revision is under way, waits until everything is final and prints one line
 * `TBF-REPORT <json>` (timings, the proxies' byte counts, the kernel's qdisc counters before and
 * after, the ledger). It asserts nothing: the test does.
 */
import { spawnSync } from 'node:child_process';
import { sleep, waitFor } from '../../helpers/index.js';
import type { LedgerReport } from './ledger.js';
import { FaultSystem } from './system.js';

export interface TbfSpec {
  readonly sites: readonly string[];
  /** The tbf parameters the test used, e.g. ['rate', '64kbit', 'burst', '3000', 'latency', '1000ms']. */
  readonly tbf: readonly string[];
  /** Revisions deployed after the first one. */
  readonly more: number;
  /** Length of each blackout. */
  readonly blackoutMs: number;
  /** Give up (and still report) after this long. */
  readonly deadlineMs: number;
}

/** The kernel's counters of the root qdisc of `lo` (`tc -s -j qdisc show dev lo`). */
export interface QdiscStats {
  readonly kind: string;
  readonly bytes: number;
  readonly packets: number;
  readonly drops: number;
  readonly overlimits: number;
  readonly requeues: number;
}

export interface TbfReport {
  readonly ok: boolean;
  readonly error?: string;
  readonly sites: readonly string[];
  readonly ms: Record<string, number>;
  /** TCP payload the fault proxies forwarded, per site and direction. */
  readonly proxies: Record<string, { up: number; down: number }>;
  readonly qdiscBefore?: QdiscStats;
  readonly qdiscAfter?: QdiscStats;
  /** The proxy blackhole: was the command still unapplied when the link came back? */
  readonly proxyBlackout?: { site: string; rev: number; heldDuring: boolean };
  /** The kernel blackout: the revision's commands' statuses when the rate was clamped. */
  readonly kernelBlackout?: { rev: number; statusesAtClamp: string[]; appliedAtRestore: number };
  readonly ledger?: LedgerReport;
}

export function qdiscStats(): QdiscStats {
  const r = spawnSync('tc', ['-s', '-j', 'qdisc', 'show', 'dev', 'lo'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0) throw new Error(`tc -s qdisc show: ${r.status} ${r.stderr}`);
  const root = (JSON.parse(r.stdout) as Record<string, unknown>[]).find((q) => q['root'] === true);
  if (!root) throw new Error(`no root qdisc on lo: ${r.stdout}`);
  const n = (k: string) => Number(root[k] ?? 0);
  return {
    kind: String(root['kind']),
    bytes: n('bytes'),
    packets: n('packets'),
    drops: n('drops'),
    overlimits: n('overlimits'),
    requeues: n('requeues'),
  };
}

function tcChange(args: readonly string[]): void {
  const r = spawnSync('tc', ['qdisc', 'change', 'dev', 'lo', 'root', 'tbf', ...args], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0) throw new Error(`tc qdisc change ${args.join(' ')}: ${r.status} ${r.stderr}`);
}

/** The tbf arguments with the rate replaced. */
function withRate(tbf: readonly string[], rate: string): string[] {
  const out = [...tbf];
  const i = out.indexOf('rate');
  if (i < 0) throw new Error('tbf arguments without a rate');
  out[i + 1] = rate;
  return out;
}

async function run(spec: TbfSpec): Promise<TbfReport> {
  const t0 = Date.now();
  const ms: Record<string, number> = {};
  const mark = (k: string, since: number) => {
    ms[k] = Date.now() - since;
  };
  const proxies: Record<string, { up: number; down: number }> = {};
  const qdiscBefore = qdiscStats();
  let sys: FaultSystem | undefined;
  let clamped = false;
  const partial: { -readonly [K in keyof TbfReport]?: TbfReport[K] } = {};
  try {
    sys = await FaultSystem.start({ sites: spec.sites });
    current = sys;
    const s = sys;
    mark('start', t0);
    const applied = (site: string, stack: string, rev: number) =>
      s
        .commands()
        .some((c) => c.site === site && c.stack === stack && c.rev === rev && c.status === 'applied');
    const allApplied = (stack: string, rev: number, sites = spec.sites) =>
      sites.every((site) => applied(site, stack, rev));

    // 1. One ~3 KB revision to every site, then `more` back to back (some may be superseded).
    let t = Date.now();
    const first = await s.deploy('big', spec.sites, { pad: 3000, services: ['web'] });
    if (first.status !== 201) throw new Error(`deploy: ${first.status}`);
    await waitFor(() => allApplied('big', first.rev!), {
      timeoutMs: 60_000,
      message: 'first revision applied',
    });
    mark('firstApplied', t);
    t = Date.now();
    let last = first.rev!;
    for (let i = 0; i < spec.more; i++) {
      const stack = i % 2 === 0 ? 'big' : 'cfg';
      const d = await s.deploy(stack, spec.sites, stack === 'big' ? { pad: 3000, services: ['web'] } : {});
      if (d.status !== 201) throw new Error(`deploy ${i}: ${d.status}`);
      if (stack === 'big') last = d.rev!;
    }
    await waitFor(() => allApplied('big', last), { timeoutMs: 90_000, message: 'latest revision applied' });
    await s.quiesce(60_000);
    mark('moreApplied', t);

    // 2. A blackout of one site's link (the proxy's blackhole) over the shaped loopback.
    const site = spec.sites[0]!;
    const a = s.agent(site);
    a.proxy.blackhole(true);
    s.count('blackhole');
    let held = false;
    let rev = 0;
    try {
      const d = await s.deploy('big', [site], { pad: 3000, services: ['web'] });
      if (d.status !== 201) throw new Error(`deploy (blackhole): ${d.status}`);
      rev = d.rev!;
      await sleep(spec.blackoutMs);
      held = !applied(site, 'big', rev);
    } finally {
      a.proxy.blackhole(false);
    }
    t = Date.now();
    await waitFor(() => applied(site, 'big', rev), {
      timeoutMs: 60_000,
      message: 'applied after the blackhole',
    });
    mark('appliedAfterProxyBlackout', t);
    partial.proxyBlackout = { site, rev, heldDuring: held };

    // 3. A blackout of the shaped link itself: the kernel's rate clamped to 8 bit/s (1 byte a second)
    //    right after a revision is accepted, while it is on its way; then back to the test's rate.
    const d = await s.deploy('big', spec.sites, { pad: 3000, services: ['web'] });
    if (d.status !== 201) throw new Error(`deploy (kernel blackout): ${d.status}`);
    tcChange(withRate(spec.tbf, '8bit'));
    clamped = true;
    s.count('tbf 8bit');
    const statusesAtClamp = s
      .commands()
      .filter((c) => c.stack === 'big' && c.rev === d.rev)
      .map((c) => `${c.site}:${c.status}`);
    await sleep(spec.blackoutMs);
    const appliedAtRestore = spec.sites.filter((x) => applied(x, 'big', d.rev!)).length;
    tcChange(spec.tbf);
    clamped = false;
    t = Date.now();
    await waitFor(() => allApplied('big', d.rev!), {
      timeoutMs: 90_000,
      message: 'applied after the kernel blackout',
    });
    mark('appliedAfterKernelBlackout', t);
    partial.kernelBlackout = { rev: d.rev!, statusesAtClamp, appliedAtRestore };

    await s.quiesce(60_000);
    await sleep(500);
    const ledger = s.ledger();
    for (const x of spec.sites) {
      const st = s.agent(x).proxy.stats();
      proxies[x] = { up: st.up.forwarded, down: st.down.forwarded };
    }
    mark('total', t0);
    return {
      ok: true,
      sites: spec.sites,
      ms,
      proxies,
      qdiscBefore,
      qdiscAfter: qdiscStats(),
      ...partial,
      ledger,
    };
  } catch (err) {
    if (clamped) tcChange(spec.tbf);
    return {
      ok: false,
      error: String((err as Error)?.stack ?? err),
      sites: spec.sites,
      ms,
      proxies,
      qdiscBefore,
      ...partial,
      ...(sys ? { ledger: safe(() => sys?.ledger()) } : {}),
    };
  } finally {
    await sys?.close();
  }
}

function safe<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}

let current: FaultSystem | undefined;
const spec = JSON.parse(process.argv[2] ?? '{}') as TbfSpec;
for (const sig of ['SIGTERM', 'SIGINT'] as const)
  process.once(sig, () => {
    void (current?.close() ?? Promise.resolve()).finally(() => process.exit(143));
  });
const deadline = setTimeout(() => {
  const report: TbfReport = {
    ok: false,
    error: `driver deadline (${spec.deadlineMs} ms)`,
    sites: spec.sites,
    ms: {},
    proxies: {},
  };
  process.stdout.write(`TBF-REPORT ${JSON.stringify(report)}\n`);
  void (current?.close() ?? Promise.resolve()).finally(() => process.exit(2));
}, spec.deadlineMs);
deadline.unref();
const report = await run(spec);
process.stdout.write(`TBF-REPORT ${JSON.stringify(report)}\n`);
process.exit(report.ok ? 0 : 1);

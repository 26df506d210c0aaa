/**
 * The soak: the whole system (broker, controller, N agents behind fault proxies) under continuous
 * deployments, link chaos and SIGKILLs of random components for a while, then quiesced and judged by
 * the ledger (I1, I2, I3). Used by scripts/soak.ts (`scripts/soak.sh 30m`) and, briefly, by
 * test/faults/soak-short.test.ts. Everything random comes from one seeded PRNG, printed with the
 * report, so a failing run's fault schedule can be replayed (timing still varies).
 *
 * Faults:
 * - links (each site's proxy): cut, reset, blackhole 1-6 s, 64 kbit/s throttle 5-15 s, random resets
 *   for 2 s, refused (site offline) 2-10 s;
 * - processes: SIGKILL of an agent, the controller or the broker at a random moment, or a restart
 *   armed with a named fault point (agents: after-commit-before-puback, mid-apply,
 *   after-apply-before-record, runtime mid-apply; controller: after-commit-before-publish,
 *   after-publish-before-record) so it dies exactly there; a supervisor restarts whatever died.
 */
import { sleep, waitFor } from '../../helpers/index.js';
import { type LedgerReport, summarise } from './ledger.js';
import { FaultSystem } from './system.js';

export interface SoakOptions {
  readonly durationMs: number;
  readonly sites?: number;
  readonly seed?: number;
  /** Mean pause between deployments, link faults and process kills. */
  readonly deployEveryMs?: number;
  readonly linkEveryMs?: number;
  readonly killEveryMs?: number;
  readonly quiesceMs?: number;
  /** Mean pause between staged rollouts (one at a time; 0: none). */
  readonly rolloutEveryMs?: number;
  readonly log?: (line: string) => void;
  readonly keep?: boolean;
}

export interface SoakReport {
  readonly seed: number;
  readonly durationMs: number;
  readonly sites: number;
  readonly deployments: { ok: number; refused: number };
  /** Staged rollouts started, and their final states. */
  readonly rollouts: { started: number; states: Record<string, number> };
  readonly faults: Record<string, number>;
  readonly faultsTotal: number;
  readonly ledger: LedgerReport;
  readonly quiesced: boolean;
  readonly brokerRssKb: number | undefined;
  readonly ok: boolean;
}

const TERMINAL = new Set(['completed', 'aborted', 'rolled-back']);
const AGENT_POINTS = [
  'agent.after-commit-before-puback',
  'agent.mid-apply',
  'agent.after-apply-before-record',
  'runtime.memory.mid-apply',
];
const CONTROLLER_POINTS = [
  'controller.after-commit-before-publish',
  'controller.after-publish-before-record',
];

export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const seed = o.seed ?? Date.now() & 0x7fffffff;
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const between = (lo: number, hi: number) => lo + rand() * (hi - lo);
  const log = o.log ?? (() => undefined);
  const names = Array.from({ length: o.sites ?? 6 }, (_, i) => `soak${i + 1}`);
  const t0 = Date.now();
  log(`soak: seed ${seed}, ${names.length} sites, ${Math.round(o.durationMs / 1000)} s of chaos`);
  const sys = await FaultSystem.start({ sites: names, applyDelayMs: 20 });
  log(`soak: system up in ${Math.round((Date.now() - t0) / 1000)} s (${sys.dir})`);
  const deadline = Date.now() + o.durationMs;
  let chaos = true;
  let ok = 0;
  let refused = 0;
  /** Components a supervisor should bring back when they die. */
  const armedNext = new Map<string, string | undefined>();
  const restarts: Promise<void>[] = [];

  // ---- supervisors: whatever dies comes back (unarmed unless a kill armed it) --------------------
  let superviseOn = true;
  const supervise = async (
    what: string,
    proc: () => { exited: Promise<unknown> } | undefined,
    restart: () => Promise<unknown>,
  ) => {
    while (superviseOn) {
      const p = proc() as { exited: Promise<unknown>; name: string; pid: number } | undefined;
      if (p) {
        const exit = (await p.exited) as { signal: string | null };
        const point = /\((.+)\)$/.exec(p.name)?.[1];
        if (superviseOn && point && exit.signal === 'SIGKILL' && !sys.killed.has(p.pid))
          sys.count(`died at ${point}`);
      }
      if (!superviseOn) return;
      await sleep(between(300, 2_000));
      if (!superviseOn) return;
      try {
        await restart();
      } catch (err) {
        log(`soak: restart of ${what} failed: ${(err as Error).message.split('\n')[0]}`);
        await sleep(1_000);
      }
    }
  };
  restarts.push(
    supervise(
      'broker',
      () => sys.broker,
      () => sys.startBroker(),
    ),
    supervise(
      'controller',
      () => sys.controller,
      () => {
        const fault = armedNext.get('controller');
        armedNext.delete('controller');
        return sys.startController(fault ? { fault, skip: Math.floor(rand() * 4) } : {});
      },
    ),
    ...names.map((site) =>
      supervise(
        site,
        () => sys.agent(site).proc,
        () => {
          const fault = armedNext.get(site);
          armedNext.delete(site);
          return sys.startAgent(site, { ...(fault ? { fault } : {}), wait: 'started' });
        },
      ),
    ),
  );

  // ---- deployments --------------------------------------------------------------------------------
  const deploying = (async () => {
    while (chaos && Date.now() < deadline) {
      const stack = pick(['app', 'cfg', 'mon']);
      const targets = rand() < 0.5 ? names : names.filter(() => rand() < 0.5);
      const r = await sys.deploy(stack, targets.length > 0 ? targets : names);
      if (r.status === 201) ok++;
      else refused++;
      await sleep(between(0.3, 1.7) * (o.deployEveryMs ?? 700));
    }
  })();

  // ---- staged rollouts (canary 1, batches of 2, health-gated, no rollback so each revision is
  //      deployed once per site and the ledger stays unambiguous) -----------------------------------
  const rolloutIds: string[] = [];
  const activeRollout = async (): Promise<boolean> => {
    const r = await sys.api('GET', '/rollouts?limit=100');
    if (r.status !== 200) return true;
    return (r.json.rollouts as { state: string }[]).some((x) => !TERMINAL.has(x.state));
  };
  const rolling = (async () => {
    const every = o.rolloutEveryMs ?? 15_000;
    if (every <= 0) return;
    while (chaos && Date.now() < deadline) {
      await sleep(between(0.5, 1.5) * every);
      if (!chaos || Date.now() >= deadline) break;
      try {
        if (await activeRollout()) continue;
        const rev = await sys.push('roll');
        const r = await sys.api('POST', '/rollouts', {
          stack: 'roll',
          rev,
          target: { group: 'faults' },
          strategy: { canary: { count: 1 }, batches: { size: 2 } },
          healthSec: 1,
          deadlineSec: 900,
          failureThreshold: { percent: 100 },
          rollback: false,
        });
        if (r.status === 201) rolloutIds.push(r.json.id as string);
      } catch {
        // controller down: try again later
      }
    }
  })();

  // ---- link chaos ---------------------------------------------------------------------------------
  const linking = (async () => {
    while (chaos && Date.now() < deadline) {
      await sleep(between(0.3, 1.7) * (o.linkEveryMs ?? 2_000));
      const a = sys.agent(pick(names));
      const r = rand();
      try {
        if (r < 0.2) {
          a.proxy.cut();
          sys.count('link cut');
        } else if (r < 0.35) {
          a.proxy.cut({ reset: true });
          sys.count('link reset');
        } else if (r < 0.55) {
          a.proxy.blackhole(true);
          sys.count('link blackhole');
          await sleep(between(1_000, 6_000));
          a.proxy.blackhole(false);
        } else if (r < 0.7) {
          a.proxy.throttle(8_000);
          sys.count('link throttle 64 kbit/s');
          setTimeout(() => a.proxy.throttle(null), between(5_000, 15_000)).unref();
        } else if (r < 0.85) {
          a.proxy.resetRandom(0.1);
          sys.count('link random resets');
          await sleep(2_000);
          a.proxy.resetRandom(0);
        } else {
          a.proxy.refuse(true);
          a.proxy.cut();
          sys.count('link down (refused)');
          await sleep(between(2_000, 10_000));
          a.proxy.refuse(false);
        }
      } catch (err) {
        log(`soak: link fault failed: ${(err as Error).message}`);
      }
    }
  })();

  // ---- process kills ------------------------------------------------------------------------------
  const killing = (async () => {
    while (chaos && Date.now() < deadline) {
      await sleep(between(0.5, 1.5) * (o.killEveryMs ?? 12_000));
      if (!chaos || Date.now() >= deadline) break;
      const r = rand();
      try {
        if (r < 0.55) {
          const site = pick(names);
          if (rand() < 0.5) {
            armedNext.set(site, pick(AGENT_POINTS));
            sys.count('agent armed with a fault point');
          }
          await sys.killAgent(site);
        } else if (r < 0.85) {
          if (rand() < 0.5) {
            armedNext.set('controller', pick(CONTROLLER_POINTS));
            sys.count('controller armed with a fault point');
          }
          await sys.killController();
        } else {
          await sys.killBroker();
        }
      } catch (err) {
        log(`soak: kill failed: ${(err as Error).message}`);
      }
    }
  })();

  // ---- progress -----------------------------------------------------------------------------------
  const progress = (async () => {
    while (chaos && Date.now() < deadline) {
      await sleep(Math.min(60_000, Math.max(5_000, o.durationMs / 10)));
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      log(
        `soak: ${left} s left; deployments ${ok} (+${refused} refused); faults ${JSON.stringify(sys.faults)}`,
      );
    }
  })();

  let quiesced = false;
  let ledger: LedgerReport;
  try {
    await Promise.all([deploying, rolling, linking, killing]);
    chaos = false;
    await progress;
    // Quiesce: links healthy, armed faults dropped, every component running, then every command final.
    for (const a of sys.agents.values()) {
      a.proxy.throttle(null);
      a.proxy.blackhole(false);
      a.proxy.resetRandom(0);
      a.proxy.refuse(false);
    }
    armedNext.clear();
    // Components armed before the end may still die at their point; the supervisors bring them back.
    log('soak: chaos over; quiescing');
    // Armed agents that never got a command are still armed: restart them clean.
    for (const a of sys.agents.values()) {
      if (a.proc && !a.proc.exitInfo && a.proc.name.includes('(')) await sys.killAgent(a.site, 'SIGTERM');
    }
    if (sys.controller && !sys.controller.exitInfo && sys.controller.name.includes('('))
      await sys.killController('SIGTERM');
    try {
      const until = Date.now() + (o.quiesceMs ?? 240_000);
      await waitFor(async () => !(await activeRollout().catch(() => true)), {
        timeoutMs: until - Date.now(),
        intervalMs: 1_000,
        message: 'rollouts finished',
      });
      await sys.quiesce(Math.max(10_000, until - Date.now()));
      quiesced = true;
    } catch (err) {
      log(`soak: did not quiesce: ${(err as Error).message.slice(0, 2_000)}`);
    }
    ledger = sys.ledger();
  } finally {
    chaos = false;
    superviseOn = false;
  }
  const states: Record<string, number> = {};
  for (const id of rolloutIds) {
    const r = await sys.api('GET', `/rollouts/${id}?sites=false`).catch(() => undefined);
    const st = r?.status === 200 ? String(r.json.state) : 'unknown';
    states[st] = (states[st] ?? 0) + 1;
  }
  const brokerRssKb = sys.brokerRssKb();
  const faultsTotal = Object.values(sys.faults).reduce((a, b) => a + b, 0);
  const report: SoakReport = {
    seed,
    durationMs: o.durationMs,
    sites: names.length,
    deployments: { ok, refused },
    rollouts: { started: rolloutIds.length, states },
    faults: { ...sys.faults },
    faultsTotal,
    ledger,
    quiesced,
    brokerRssKb,
    ok: quiesced && ledger.ok,
  };
  log(`soak: ${summarise(ledger)}`);
  await sys.close({ keep: o.keep === true || !report.ok });
  await Promise.race([Promise.allSettled(restarts), sleep(5_000)]);
  return report;
}

/**
 * `npm run bench -- --only fleet`: a single-batch rollout to a simulated fleet (DESIGN §7: 10,000 sites
 * acknowledged end to end within 15 s on a 2-core machine, controller + broker + simulated agents in one
 * run), with the durable `outpost broker` and with Mosquitto; a reconnect storm after a broker restart;
 * controller API latency while the rollout runs; and how the light simulated site compares with the
 * real agent (per-site SQLite files). See scripts/sim/ for the simulator (README.md there).
 */

import { cpus, loadavg } from 'node:os';
import type { SimBrokerKind } from '../sim/brokers.js';
import type { SiteKind } from '../sim/fleet-child.js';
import {
  percentile,
  type RolloutResult,
  reconnectStorm,
  rollout,
  type StormResult,
  startWorld,
  type World,
} from '../sim/world.js';
import { type BenchOptions, median, type Row, type Section } from './types.js';

const log = (line: string): void => void process.stderr.write(`  fleet: ${line}\n`);
const BROKERS: readonly SimBrokerKind[] = ['durable', 'mosquitto'];
const LABEL: Record<SimBrokerKind, string> = { durable: 'durable broker', mosquitto: 'Mosquitto' };

/** An incomplete rollout is reported (and judged below), not fatal: log who is stuck and why. */
function incomplete(what: string, r: RolloutResult): void {
  if (r.done) return;
  log(`${what}: NOT COMPLETE at the deadline: ${JSON.stringify(r.counts)}`);
  for (const x of r.stuck) log(`  not applied: ${JSON.stringify(x)}`);
}

const missing = (r: RolloutResult, sites: number): number => sites - (r.counts['applied'] ?? 0);

interface BrokerResult {
  readonly broker: SimBrokerKind;
  readonly rollouts: RolloutResult[];
  readonly sampled: RolloutResult;
  readonly idleApi: { sites: number[]; deployment: number[] };
  readonly storms: StormResult[];
  readonly connectMs: number;
  readonly enrolMs: number;
  readonly fleetRss: number;
  readonly fleetBaseRss: number;
  readonly brokerRss: number;
}

async function idleSamples(
  w: World,
  deployment: string,
  n: number,
): Promise<{ sites: number[]; deployment: number[] }> {
  const out = { sites: [] as number[], deployment: [] as number[] };
  for (let i = 0; i < n; i++) {
    out.sites.push((await w.controller.api('GET', '/sites?limit=100')).ms);
    out.deployment.push((await w.controller.api('GET', `/deployments/${deployment}`)).ms);
  }
  return out;
}

async function measureBroker(
  broker: SimBrokerKind,
  sites: number,
  runs: number,
  full: boolean,
  timeoutMs: number,
): Promise<BrokerResult> {
  const stormTimeoutMs = full ? timeoutMs : 120_000;
  const w = await startWorld({ broker, sites, kind: 'lite', log });
  try {
    const stats = await w.fleet.stats();
    const rollouts: RolloutResult[] = [];
    let variant = 0;
    for (let r = 0; r < runs; r++) {
      const res = await rollout(w, { variant: ++variant, timeoutMs });
      incomplete(`${broker} rollout ${r + 1}`, res);
      rollouts.push(res);
      log(
        `${broker} rollout ${r + 1}: ${Math.round(res.ackMs)} ms to ${sites} applied (API ${Math.round(res.apiMs)} ms)`,
      );
    }
    const idleApi = await idleSamples(w, rollouts.at(-1)!.deployment, 10);
    const sampled = await rollout(w, { variant: ++variant, timeoutMs, sample: true });
    incomplete(`${broker} sampled rollout`, sampled);
    log(
      `${broker} sampled rollout: ${Math.round(sampled.ackMs)} ms; ${sampled.api?.sites.length ?? 0} + ${sampled.api?.deployment.length ?? 0} API samples`,
    );
    const storms: StormResult[] = [];
    for (const how of full && broker === 'durable'
      ? (['graceful', 'kill'] as const)
      : (['graceful'] as const)) {
      const s = await reconnectStorm(w, { how, variant: ++variant, downMs: 2000, timeoutMs: stormTimeoutMs });
      storms.push(s);
      log(
        `${broker} storm (${how}): broker restart ${Math.round(s.restartMs)} ms, then reconnect ${Math.round(s.reconnectMs)} ms, ` +
          `applied ${Math.round(s.ackMs)} ms, sessions lost ${s.sessionsLost}, not applied ${s.notApplied}, ` +
          `shown offline ${s.shownOffline}, failed connection attempts ${s.after.connectFailures - s.before.connectFailures} ` +
          `(${s.failedAfterRestart} once it listened)`,
      );
      for (const x of s.stuck) log(`  not applied: ${JSON.stringify(x)}`);
      for (const x of s.offline) log(`  shown offline: ${JSON.stringify(x)}`);
    }
    return {
      broker,
      rollouts,
      sampled,
      idleApi,
      storms,
      connectMs: w.connectMs,
      enrolMs: w.enrolMs,
      fleetRss: stats.rss,
      fleetBaseRss: stats.baseRss,
      brokerRss: w.broker.rss(),
    };
  } finally {
    await w.close();
  }
}

interface Fidelity {
  readonly kind: SiteKind;
  readonly sites: number;
  readonly ackMs: number;
  readonly fleetCpu: number;
  readonly controllerCpu: number;
  readonly rssPerSite: number;
}

/** One rollout with `kind` sites on the durable broker: the simulator's cost and the agent's. */
async function measureKind(kind: SiteKind, sites: number, timeoutMs: number): Promise<Fidelity> {
  const w = await startWorld({ broker: 'durable', sites, kind, workers: 1, log });
  try {
    const st = await w.fleet.stats();
    const r = await rollout(w, { variant: 1, timeoutMs });
    incomplete(`${kind} × ${sites}`, r);
    log(`${kind} × ${sites}: ${Math.round(r.ackMs)} ms, fleet CPU ${r.cpu.fleet.toFixed(1)} s`);
    return {
      kind,
      sites,
      ackMs: r.ackMs,
      fleetCpu: r.cpu.fleet,
      controllerCpu: r.cpu.controller,
      rssPerSite: (st.rss - st.baseRss) / sites,
    };
  } finally {
    await w.close();
  }
}

const s1 = (ms: number): number => ms / 1000;

export async function run(opts: BenchOptions): Promise<Section> {
  const sites = opts.full ? 10_000 : 1_000;
  // Quick mode stays within ~3 minutes: one timed rollout per broker (the sampled one is a second).
  const runs = opts.full ? Math.min(opts.runs, 3) : 1;
  const timeoutMs = opts.full ? 300_000 : 180_000;
  const load0 = loadavg()[0]!;
  const results: BrokerResult[] = [];
  for (const b of BROKERS) results.push(await measureBroker(b, sites, runs, opts.full, timeoutMs));
  const fidelitySites = opts.full ? 1_000 : 100;
  const fidelity = [
    await measureKind('lite', fidelitySites, timeoutMs),
    await measureKind('real', fidelitySites, timeoutMs),
  ];

  const rows: Row[] = [];
  const judged = sites >= 10_000;
  const perK = (x: number) => (x * 1000) / sites;
  for (const r of results) {
    const ack = median(r.rollouts.map((x) => x.ackMs));
    rows.push({
      name: `rollout to ${sites.toLocaleString('en-US')} sites, deploy API call → every \`applied\` ack at the controller, ${LABEL[r.broker]}`,
      value: s1(ack),
      unit: 's',
      ...(judged ? { target: '≤ 15 s', ok: s1(ack) <= 15 } : { target: '(≤ 15 s at 10,000)' }),
      note: `runs: ${r.rollouts.map((x) => s1(x.ackMs).toFixed(1)).join(', ')} s`,
    });
  }
  for (const r of results) {
    const lost = [...r.rollouts, r.sampled].reduce((a, x) => a + missing(x, sites), 0);
    rows.push({
      name: `sites without an \`applied\` ack at the deadline (${timeoutMs / 1000} s), all rollouts, ${LABEL[r.broker]}`,
      value: lost,
      unit: '',
      target: '0',
      ok: lost === 0,
    });
  }
  const [d, m] = results as [BrokerResult, BrokerResult];
  rows.push({
    name: 'rollout time: durable broker / Mosquitto',
    value: median(d.rollouts.map((x) => x.ackMs)) / median(m.rollouts.map((x) => x.ackMs)),
    unit: '×',
  });
  for (const r of results) {
    const cpu = (k: 'controller' | 'broker' | 'fleet') => median(r.rollouts.map((x) => x.cpu[k]));
    rows.push(
      {
        name: `CPU per 1,000 sites of a rollout, controller (one thread: a floor on the rollout time), ${LABEL[r.broker]}`,
        value: perK(cpu('controller')),
        unit: 's',
      },
      {
        name: `CPU per 1,000 sites of a rollout, broker, ${LABEL[r.broker]}`,
        value: perK(cpu('broker')),
        unit: 's',
      },
      {
        name: `CPU per 1,000 sites of a rollout, simulated sites, ${LABEL[r.broker]}`,
        value: perK(cpu('fleet')),
        unit: 's',
      },
      {
        name: `POST /v1/deployments for ${sites.toLocaleString('en-US')} sites (commits every command), ${LABEL[r.broker]}`,
        value: median(r.rollouts.map((x) => x.apiMs)),
        unit: 'ms',
      },
    );
  }
  for (const r of results) {
    const api = r.sampled.api!;
    rows.push(
      {
        name: `GET /v1/sites?limit=100 during a rollout, p50 / p99, ${LABEL[r.broker]}`,
        value: percentile(api.sites, 50),
        unit: 'ms',
        note: `p99 ${Math.round(percentile(api.sites, 99))} ms, ${api.sites.length} samples; idle p50 ${Math.round(percentile(r.idleApi.sites, 50))} ms`,
      },
      {
        name: `GET /v1/deployments/:id (${sites.toLocaleString('en-US')} commands) during a rollout, p50 / p99, ${LABEL[r.broker]}`,
        value: percentile(api.deployment, 50),
        unit: 'ms',
        note: `p99 ${Math.round(percentile(api.deployment, 99))} ms, ${api.deployment.length} samples; idle p50 ${Math.round(percentile(r.idleApi.deployment, 50))} ms`,
      },
      {
        name: `rollout time with the API sampled meanwhile, ${LABEL[r.broker]}`,
        value: s1(r.sampled.ackMs),
        unit: 's',
      },
    );
  }
  for (const r of results) {
    for (const s of r.storms) {
      const how = s.how === 'kill' ? 'SIGKILL' : 'clean stop';
      const failed = s.failedAfterRestart;
      rows.push(
        {
          name: `reconnect storm (${how}, restart on the same data): every session back, from the broker listening again, ${LABEL[r.broker]}`,
          // NaN: not every session was back by the deadline; the row then shows the wait so far.
          value: Number.isNaN(s.reconnectMs) ? s1(s.ackMs) : s1(s.reconnectMs),
          unit: 's',
          ...(Number.isNaN(s.reconnectMs) ? { target: 'every session back', ok: false } : {}),
          note: `${Number.isNaN(s.reconnectMs) ? 'NOT every session back by the deadline; ' : ''}${s.sessionsLost} sessions lost (no stored session at CONNACK); the broker took ${s1(s.restartMs).toFixed(1)} s to start; ${failed} connection attempts failed once it listened again`,
        },
        {
          name: `… and every site applied the revision deployed while the broker was down, ${LABEL[r.broker]}`,
          value: s1(s.ackMs),
          unit: 's',
          note: `${s.notApplied} not applied at the deadline`,
          target: '0 lost',
          ok: s.done && s.notApplied === 0,
        },
        {
          name: `… sites the controller then shows offline although connected (retained status), ${LABEL[r.broker]}`,
          value: s.shownOffline,
          unit: '',
          target: '0 (I10)',
          ok: s.shownOffline === 0,
        },
      );
    }
  }
  for (const r of results) {
    rows.push(
      {
        name: `${sites.toLocaleString('en-US')} simulated sites connect and subscribe, ${LABEL[r.broker]}`,
        value: s1(r.connectMs),
        unit: 's',
        note: `enrolment ${Math.round(r.enrolMs)} ms; broker RSS ${Math.round(r.brokerRss / 2 ** 20)} MiB`,
      },
      {
        name: `simulator memory per site (lite, RSS above the processes' baseline), ${LABEL[r.broker]} run`,
        value: (r.fleetRss - r.fleetBaseRss) / sites / 1024,
        unit: 'KiB',
      },
    );
  }
  const [lite, real] = fidelity as [Fidelity, Fidelity];
  rows.push(
    {
      name: `real agent (createAgent, per-site SQLite file) × ${fidelitySites}: rollout time`,
      value: s1(real.ackMs),
      unit: 's',
      note: `lite × ${fidelitySites}: ${s1(lite.ackMs).toFixed(1)} s`,
    },
    {
      name: 'site-side CPU per site, real agent / lite simulated site',
      value: real.fleetCpu / lite.fleetCpu,
      unit: '×',
      note: `${((1000 * real.fleetCpu) / fidelitySites).toFixed(1)} vs ${((1000 * lite.fleetCpu) / fidelitySites).toFixed(1)} ms per site`,
    },
    {
      name: "memory per site, real agent (RSS above the hosting process's baseline)",
      value: real.rssPerSite / 1024,
      unit: 'KiB',
      note: `lite ${Math.round(lite.rssPerSite / 1024)} KiB`,
    },
  );
  return {
    title: `Fleet rollout: ${sites.toLocaleString('en-US')} simulated sites`,
    method: [
      'Everything on loopback, each part in a process of its own: the broker (the durable `outpost broker`,',
      'or Mosquitto with persistence and max_queued_messages raised to 1,000,000), the controller',
      '(`buildController`, REST API over HTTP, SQLite store, outbox) and the simulated sites in',
      `${Math.ceil(sites / 2500)} process${sites > 2500 ? 'es' : ''} (scripts/sim/: "lite" sites — the protocol and journal logic of the agent`,
      "(openCommand, decodeSpec + policy, MemoryRuntime apply, acks and state signed with each site's own",
      'Ed25519 key, retained status and last will) with an in-memory journal; see scripts/sim/README.md).',
      'Sites connect to the plain loopback listener (client id = site id, clean=false, QoS 1); the controller',
      "to the durable broker's TLS listener with its client certificate (Mosquitto: plain). Sites are",
      "enrolled with their uplink keys straight into the controller's store (one transaction, not audited).",
      'Each rollout pushes a new revision of the reference 3-service stack and deploys it to the group of',
      'all sites in one batch; the time runs from sending POST /v1/deployments to the moment the controller',
      "has committed every site's `applied` ack (the done_at of the last one, in its store). CPU per part from /proc. API latency:",
      'one extra rollout during which GET /v1/sites?limit=100 and GET /v1/deployments/:id are called in turn,',
      'one at a time. Reconnect storm: the broker is stopped (clean stop; in --full also SIGKILL for the',
      'durable broker) under the connected fleet, a new revision is deployed while it is down, the broker is',
      'started again on the same ports and data after 2 s; times run from its restart. Sites reconnect with',
      "the agent's backoff (1 s doubling, with jitter). Real-agent comparison: one rollout to",
      `${fidelitySites} product agents (createAgent + MemoryRuntime, SQLite file each, WAL, synchronous=FULL) and`,
      `to ${fidelitySites} lite sites, one process each, durable broker.`,
      runs > 1
        ? `Rollout times: median of ${runs} rollouts.`
        : 'Rollout times: one rollout per broker (quick mode).',
      '\n\nWhat the figures mean: *rollout* = wall time from sending the deploy call to the commit of the',
      "last site's `applied` ack in the controller's store (done_at); *CPU per 1,000 sites* = CPU seconds",
      'the part used during that rollout, per 1,000 sites (the controller is one thread, so its figure for',
      '10,000 sites is a floor on the rollout time; the three together, divided by the cores, another);',
      '*POST /v1/deployments* = the API call that writes one command per site; *API p50/p99* = latency of',
      'the GET calls while a rollout runs (idle p50 in the note); *reconnect storm* = from the restarted',
      'broker listening to every site connected and subscribed again (this includes the agent backoff),',
      "then to every site's `applied` ack of the revision deployed while the broker was down; *sessions",
      'lost* must be 0 (I5) and *shown offline* must be 0 (I10).',
      '\n\n**Machine load.** Controller, broker and every simulated site share the same cores, and so does',
      'whatever else runs on the machine: on a busy machine every wall time stretches (the storm most, as',
      'the agent backoff doubles while connections time out). Load average (1 min) when this section',
      `started: ${load0.toFixed(1)}, when it ended: ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores. Judge the`,
      '15 s target only from a run on a quiet machine; compare brokers within one run; the CPU figures are',
      `the steadier ones. Command: \`npm run bench -- --only fleet${opts.full ? ' --full' : ''}\` (quick: 1,000`,
      'sites; --full: 10,000).',
    ].join(' '),
    rows,
  };
}

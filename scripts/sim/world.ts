/**
 * A whole simulated deployment on loopback, each part in a process of its own: PKI (`initCerts`),
 * a broker (the durable `outpost broker` or Mosquitto, brokers.ts), the controller
 * (controller-child.ts: REST API over HTTP, SQLite store, outbox, ingest) and a fleet of simulated
 * sites (fleet.ts), enrolled with their deterministic uplink keys.
 *
 * Scenarios used by the benchmarks and the CLI (run.ts):
 * - `rollout()`: push a revision of a Compose stack through the API, deploy it in one batch to every
 *   site, and time the API call and the moment the controller has every site's `applied` ack; the
 *   controller API is sampled meanwhile (GET /v1/sites, GET /v1/deployments/:id).
 * - `reconnectStorm()`: stop the broker (clean stop or SIGKILL) while every site is connected, deploy
 *   a new revision while it is down (the controller answers 201 from its durable outbox), start the
 *   broker again on the same ports and data, and time every session's return and every `applied` ack.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigInput } from '../../controller/src/config.js';
import { type SimBroker, type SimBrokerKind, startSimBroker } from './brokers.js';
import { type SimController, startSimController } from './controller.js';
import { type Fleet, startFleet } from './fleet.js';
import type { FleetChildStats, SiteKind } from './fleet-child.js';
import { siteIds } from './keys.js';
import { makePki, type SimPki } from './pki.js';
import { epochMs, procCpuSec } from './proc.js';

const REPO = join(import.meta.dirname, '..', '..');
export const REFERENCE_COMPOSE_FILE = join(REPO, 'test', 'fixtures', 'stacks', 'reference-3svc.compose.yml');

/** The reference 3-service stack; `variant` > 0 changes one env value so each push is a new revision. */
export function referenceCompose(variant = 0): string {
  const text = readFileSync(REFERENCE_COMPOSE_FILE, 'utf8');
  if (variant === 0) return text;
  const out = text.replace('RETENTION_DAYS: "30"', `RETENTION_DAYS: "${30 + variant}"`);
  if (out === text) throw new Error('reference compose file changed: cannot make a variant');
  return out;
}

export interface WorldOptions {
  readonly broker: SimBrokerKind;
  readonly sites: number;
  readonly kind: SiteKind;
  readonly workers?: number;
  /** `store`: one transaction in the controller's store; `api`: POST /v1/sites per site. */
  readonly enrol?: 'store' | 'api';
  readonly group?: string;
  readonly controllerConfig?: ConfigInput;
  readonly agentConfig?: Record<string, unknown>;
  readonly connectParallel?: number;
  readonly log?: (line: string) => void;
}

export interface World {
  readonly pki: SimPki;
  readonly broker: SimBroker;
  readonly controller: SimController;
  readonly fleet: Fleet;
  readonly sites: readonly string[];
  readonly group: string;
  /** How long enrolment and the fleet's connection took, ms. */
  readonly enrolMs: number;
  readonly connectMs: number;
  /** CPU seconds so far of broker, controller, fleet (from /proc). */
  cpu(): { broker: number; controller: number; fleet: number };
  close(): Promise<void>;
}

async function enrolViaApi(
  c: SimController,
  keys: ReadonlyMap<string, string>,
  group: string,
): Promise<void> {
  const sites = [...keys.keys()];
  const g = await c.api('POST', '/groups', { name: group });
  if (g.status !== 201 && g.status !== 409)
    throw new Error(`create group: ${g.status} ${JSON.stringify(g.body)}`);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sites.length) {
      const id = sites[next++]!;
      const r = await c.api('POST', '/sites', { id, uplinkKey: keys.get(id), groups: [group] });
      if (r.status !== 201) throw new Error(`enrol ${id}: ${r.status} ${JSON.stringify(r.body)}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

export async function startWorld(o: WorldOptions): Promise<World> {
  const log = o.log ?? (() => undefined);
  const group = o.group ?? 'fleet';
  const pki = await makePki();
  const root = join(pki.dir, '..');
  const parts: { close(): Promise<void> }[] = [];
  const closeParts = async (): Promise<void> => {
    for (const p of parts.reverse()) await p.close().catch(() => undefined);
    pki.remove();
  };
  try {
    const broker = await startSimBroker(o.broker, { certsDir: pki.dir });
    parts.push(broker);
    log(`${o.broker} broker up (pid ${broker.pid})`);
    const ctlData = join(root, 'controller');
    mkdirSync(ctlData, { recursive: true });
    const controller = await startSimController({
      dataDir: ctlData,
      certsDir: pki.dir,
      mqttUrl: broker.controllerUrl,
      signingKid: pki.controllerKid,
      ...(o.controllerConfig ? { config: o.controllerConfig } : {}),
    });
    parts.push(controller);
    const sites = siteIds(o.sites);
    const fleet = await startFleet({
      kind: o.kind,
      sites,
      url: broker.siteUrl,
      certsDir: pki.dir,
      dataRoot: join(root, 'sites'),
      ...(o.workers ? { workers: o.workers } : {}),
      ...(o.agentConfig ? { agentConfig: o.agentConfig } : {}),
      ...(o.connectParallel ? { connectParallel: o.connectParallel } : {}),
    });
    parts.push(fleet);
    const t0 = performance.now();
    if ((o.enrol ?? 'store') === 'store') await controller.enrolDirect(fleet.keys, group);
    else await enrolViaApi(controller, fleet.keys, group);
    const enrolMs = performance.now() - t0;
    log(`${sites.length} sites enrolled (${o.enrol ?? 'store'}) in ${Math.round(enrolMs)} ms`);
    const { ms: connectMs } = await fleet.connect();
    log(
      `${sites.length} ${o.kind} sites connected in ${Math.round(connectMs)} ms (${fleet.pids.length} processes)`,
    );
    let closed: Promise<void> | undefined;
    return {
      pki,
      broker,
      controller,
      fleet,
      sites,
      group,
      enrolMs,
      connectMs,
      cpu: () => ({
        broker: procCpuSec(broker.pid),
        controller: procCpuSec(controller.pid),
        fleet: fleet.cpuSec(),
      }),
      close() {
        closed ??= closeParts();
        return closed;
      },
    };
  } catch (err) {
    await closeParts();
    throw err;
  }
}

// ---- API sampling -------------------------------------------------------------------------------

export interface ApiSamples {
  readonly sites: number[];
  readonly deployment: number[];
}

/** Calls GET /v1/sites and GET /v1/deployments/:id in turn, one at a time, until stopped. */
export function sampleApi(c: SimController, deployment: () => string | undefined, pauseMs = 50) {
  const samples: ApiSamples = { sites: [], deployment: [] };
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const s = await c.api('GET', '/sites?limit=100').catch(() => undefined);
      if (s?.status === 200) samples.sites.push(s.ms);
      const id = deployment();
      if (id && !stop) {
        const d = await c.api('GET', `/deployments/${id}`).catch(() => undefined);
        if (d?.status === 200) samples.deployment.push(d.ms);
      }
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    samples,
    async stop(): Promise<ApiSamples> {
      stop = true;
      await loop;
      return samples;
    },
  };
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

// ---- scenarios ----------------------------------------------------------------------------------

export interface StuckSite {
  readonly site: string;
  /** The command as the controller holds it. */
  readonly command: unknown;
  /** The controller's view of the site's status. */
  readonly online: boolean | null;
  /** The site's own view (SimAgent.inspect()). */
  readonly sim: unknown;
}

/** Up to `max` sites whose command of the deployment is not `applied`: both sides' view. */
export async function stuckSites(w: World, deployment: string, max = 5): Promise<StuckSite[]> {
  const dep = await w.controller.api('GET', `/deployments/${deployment}`);
  const out: StuckSite[] = [];
  for (const c of (dep.body.commands as { site: string; seq: number; status: string }[])
    .filter((x) => x.status !== 'applied')
    .slice(0, max)) {
    const cmd = await w.controller.api('GET', `/sites/${c.site}/commands/${c.seq}`);
    const site = await w.controller.api('GET', `/sites/${c.site}`);
    const sim = (await w.fleet.inspect([c.site]))[c.site];
    out.push({ site: c.site, command: cmd.body, online: site.body.online, sim });
  }
  return out;
}

export interface RolloutResult {
  readonly rev: number;
  readonly deployment: string;
  /** The POST /v1/deployments call (signing happens after: the outbox issues asynchronously). */
  readonly apiMs: number;
  /** From sending POST /v1/deployments to the controller holding every site's `applied` ack. */
  readonly ackMs: number;
  /** When the last `applied` ack was committed (epoch ms, the controller's done_at), if done. */
  readonly appliedAt: number;
  readonly done: boolean;
  readonly counts: Record<string, number>;
  readonly api?: ApiSamples;
  /** When not done: up to 5 sites without an `applied` ack at the deadline. */
  readonly stuck: StuckSite[];
  /** CPU seconds used during the rollout by each part. */
  readonly cpu: { broker: number; controller: number; fleet: number };
}

export async function rollout(
  w: World,
  o: { variant: number; timeoutMs: number; sample?: boolean },
): Promise<RolloutResult> {
  const push = await w.controller.api('POST', '/stacks/ref/revisions', {
    compose: referenceCompose(o.variant),
  });
  if (push.status !== 201 && push.status !== 200)
    throw new Error(`push: ${push.status} ${JSON.stringify(push.body)}`);
  const rev = push.body.revision.rev as number;
  let deployment: string | undefined;
  const sampler = o.sample ? sampleApi(w.controller, () => deployment) : undefined;
  const cpu0 = w.cpu();
  const t0 = epochMs();
  const d = await w.controller.api('POST', '/deployments', { stack: 'ref', rev, target: { group: w.group } });
  const apiMs = epochMs() - t0;
  if (d.status !== 201) {
    await sampler?.stop();
    throw new Error(`deploy: ${d.status} ${JSON.stringify(d.body).slice(0, 500)}`);
  }
  deployment = d.body.id as string;
  const watched = await w.controller.watch(deployment, w.sites.length, o.timeoutMs);
  const cpu1 = w.cpu();
  const api = await sampler?.stop();
  const stuck = watched.done ? [] : await stuckSites(w, deployment);
  return {
    rev,
    deployment,
    apiMs,
    ackMs: watched.at - t0,
    appliedAt: watched.at,
    done: watched.done,
    counts: watched.counts,
    ...(api ? { api } : {}),
    stuck,
    cpu: {
      broker: cpu1.broker - cpu0.broker,
      controller: cpu1.controller - cpu0.controller,
      fleet: cpu1.fleet - cpu0.fleet,
    },
  };
}

export interface StormResult {
  readonly how: 'graceful' | 'kill';
  /** From the broker accepting connections again to every site connected and subscribed, ms. */
  readonly reconnectMs: number;
  /** From the broker accepting connections again to every site's `applied` ack for the new revision. */
  readonly ackMs: number;
  readonly done: boolean;
  /** Sites whose CONNACK after the restart had no stored session (the broker lost it). */
  readonly sessionsLost: number;
  /** Sites without an `applied` ack at the deadline. */
  readonly notApplied: number;
  readonly counts: Record<string, number>;
  /** Sites the controller shows offline (retained status) although they are connected (I10), after the storm. */
  readonly shownOffline: number;
  /** Up to 5 of them: the status the controller holds and the site's own view. */
  readonly offline: { site: string; status: unknown; sim: unknown }[];
  /** Sites still shown offline 30 s later (NaN when none were at first): a transient backlog or a wrong status. */
  readonly shownOfflineLater: number;
  /** How long the broker took to start again (process start to listening), ms. */
  readonly restartMs: number;
  /** Connection attempts that closed before their CONNACK once the broker listened again. */
  readonly failedAfterRestart: number;
  /** Up to 5 sites without an `applied` ack at the deadline: command status and the site's view. */
  readonly stuck: StuckSite[];
  readonly before: FleetChildStats;
  readonly after: FleetChildStats;
}

export async function reconnectStorm(
  w: World,
  o: { how: 'graceful' | 'kill'; variant: number; downMs: number; timeoutMs: number },
): Promise<StormResult> {
  const before = await w.fleet.stats();
  await w.broker.stop(o.how);
  // While the broker is down: a new revision, deployed; the controller commits it and waits.
  const push = await w.controller.api('POST', '/stacks/ref/revisions', {
    compose: referenceCompose(o.variant),
  });
  if (push.status !== 201 && push.status !== 200) throw new Error(`push: ${push.status}`);
  const d = await w.controller.api('POST', '/deployments', {
    stack: 'ref',
    rev: push.body.revision.rev,
    target: { group: w.group },
  });
  if (d.status !== 201) throw new Error(`deploy while the broker is down: ${d.status}`);
  await new Promise((r) => setTimeout(r, o.downMs));
  const r0 = epochMs();
  await w.broker.start();
  const t0 = epochMs();
  const restartMs = t0 - r0;
  const atRestart = await w.fleet.stats();
  const watching = w.controller.watch(d.body.id as string, w.sites.length, o.timeoutMs);
  let reconnectMs = Number.NaN;
  let after = before;
  const until = performance.now() + o.timeoutMs;
  while (performance.now() < until) {
    after = await w.fleet.stats();
    if (after.ready >= w.sites.length && after.connacks - before.connacks >= w.sites.length) {
      reconnectMs = epochMs() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const watched = await watching;
  after = await w.fleet.stats();
  // Statuses settle (an agent's status is throttled to one per 5 s); then count the sites shown offline.
  await new Promise((r) => setTimeout(r, 6000));
  const off = await w.controller.api('GET', `/sites?online=false&limit=${Math.max(1, w.sites.length)}`);
  const offSites = off.status === 200 ? (off.body.sites as { id: string }[]) : undefined;
  const shownOffline = offSites ? offSites.length : Number.NaN;
  const offline: StormResult['offline'] = [];
  if (offSites && offSites.length > 0) {
    const ids = offSites.slice(0, 5).map((x) => x.id);
    const views = await w.fleet.inspect(ids);
    for (const id of ids) {
      const site = await w.controller.api('GET', `/sites/${id}`);
      offline.push({
        site: id,
        status: { online: site.body.online, age: site.body.statusAge, status: site.body.status },
        sim: views[id],
      });
    }
  }
  let shownOfflineLater = Number.NaN;
  if (shownOffline > 0) {
    await new Promise((r) => setTimeout(r, 30_000));
    const later = await w.controller.api('GET', `/sites?online=false&limit=${Math.max(1, w.sites.length)}`);
    if (later.status === 200) shownOfflineLater = (later.body.sites as unknown[]).length;
  }
  const stuck = watched.done ? [] : await stuckSites(w, d.body.id as string);
  return {
    how: o.how,
    reconnectMs,
    ackMs: watched.at - t0,
    done: watched.done,
    sessionsLost: after.sessionLost,
    notApplied: w.sites.length - (watched.counts['applied'] ?? 0),
    shownOffline,
    shownOfflineLater,
    offline,
    restartMs,
    failedAfterRestart: after.connectFailures - atRestart.connectFailures,
    counts: watched.counts,
    stuck,
    before,
    after,
  };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

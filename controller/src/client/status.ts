/**
 * `outpost status`: the fleet at a glance (sites online/offline, per-stack revision distribution,
 * commands in flight, recent deployments and failures), once or `--watch`ed: redrawn in place on a
 * terminal, one line per change otherwise (JSON lines with --json).
 */
import { type ApiClient, type Deployment, EXIT, type Site, usageError } from './api.js';
import { type Ctx, durationOpt, positionals } from './common.js';
import { failureReasons } from './deploy.js';
import { clock, formatAge, json } from './io.js';
import {
  bucketOf,
  FINAL,
  LiveFrame,
  type Progress,
  progressLine,
  progressOf,
  progressRow,
  useColor,
  watchLoop,
} from './progress.js';
import { allSites, stacksOf } from './sites.js';

export const STATUS_HELP = `usage: outpost status [--group G] [--limit N] [--watch [--interval S] [--timeout S]]

The fleet at a glance: sites online/offline/unknown, which revision of each stack the sites run
(and how many are still converging), commands in flight (pending, sent, accepted), the latest
deployments with their progress, and recent failures.

  --group G      only the sites of group G (deployments and command counts stay fleet-wide)
  --limit N      deployments shown (default 5)
  --watch        keep watching: on a terminal the view is redrawn in place with a progress bar per
                 deployment; when stdout is not a terminal one line is printed per change
                 (site online/offline, deployment progress, new failure); --json gives JSON lines
  --interval S   poll period while watching (default 2s)
  --timeout S    stop watching after S (exit 0); Ctrl-C stops too (exit 130)

examples:
  outpost status
  outpost status --json
  outpost status --watch
  outpost status --watch --interval 5 --timeout 10m | tee rollout.log
`;

export interface StatusValues {
  group?: string[] | undefined;
  limit?: string | undefined;
  watch?: boolean | undefined;
  interval?: string | undefined;
  timeout?: string | undefined;
}

interface Failure {
  site: string;
  seq: number;
  status: string;
  reason: string | null;
  deployment: string;
  stack: string;
  rev: number;
}

export interface Fleet {
  at: string;
  sites: { total: number; online: number; offline: number; unknown: number };
  offline: { id: string; age: number | null }[];
  /** stack → running revision → number of sites; `converging`: sites whose agent wants another revision. */
  stacks: Record<string, { revisions: Record<string, number>; converging: number }>;
  /** Commands not final yet, by status (fleet-wide). */
  inFlight: Record<string, number>;
  deployments: Progress[];
  failures: Failure[];
}

/** Failure reasons never change once final: looked up once per (site, seq). */
type ReasonCache = Map<string, string | null>;

async function snapshot(
  api: ApiClient,
  group: string | undefined,
  limit: number,
  cache: ReasonCache,
): Promise<{ fleet: Fleet; sites: Site[] }> {
  const [sites, stats, deps] = await Promise.all([
    allSites(api, { group }),
    api.get<{ commands?: Record<string, number> }>('/stats'),
    api.get<{ deployments: Deployment[] }>('/deployments', { limit }),
  ]);
  const fleet: Fleet = {
    at: new Date().toISOString(),
    sites: { total: sites.length, online: 0, offline: 0, unknown: 0 },
    offline: [],
    stacks: {},
    inFlight: {},
    deployments: deps.deployments.map(progressOf),
    failures: [],
  };
  for (const s of sites) {
    if (s.online === true) fleet.sites.online++;
    else if (s.online === false) {
      fleet.sites.offline++;
      fleet.offline.push({ id: s.id, age: s.age });
    } else fleet.sites.unknown++;
    for (const st of stacksOf(s)) {
      const e = fleet.stacks[st.name] ?? { revisions: {}, converging: 0 };
      fleet.stacks[st.name] = e;
      e.revisions[String(st.running)] = (e.revisions[String(st.running)] ?? 0) + 1;
      if (st.want !== st.running) e.converging++;
    }
  }
  for (const [status, n] of Object.entries(stats.commands ?? {}))
    if (!FINAL.has(status) && n > 0) fleet.inFlight[status] = n;

  const failed: { site: string; seq: number; status: string; d: Deployment }[] = [];
  for (const d of deps.deployments)
    for (const c of d.commands) if (bucketOf(c.status) === 'failed') failed.push({ ...c, d });
  const recent = failed.slice(0, 10);
  const unknown = recent.filter((f) => !cache.has(`${f.site}#${f.seq}`));
  for (const r of await failureReasons(api, unknown)) cache.set(`${r.site}#${r.seq}`, r.reason);
  fleet.failures = recent.map((f) => ({
    site: f.site,
    seq: f.seq,
    status: f.status,
    reason: cache.get(`${f.site}#${f.seq}`) ?? null,
    deployment: f.d.id,
    stack: f.d.stack,
    rev: f.d.rev,
  }));
  return { fleet, sites };
}

function inFlightText(f: Fleet): string {
  const n = Object.values(f.inFlight).reduce((a, b) => a + b, 0);
  const parts = Object.entries(f.inFlight).map(([s, k]) => `${s === 'published' ? 'sent' : s} ${k}`);
  return `${n} command(s) in flight${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

function fleetLine(f: Fleet): string {
  return `fleet: ${f.sites.total} site(s), ${f.sites.online} online, ${f.sites.offline} offline, ${f.sites.unknown} unknown; ${inFlightText(f)}`;
}

function failureText(x: Failure): string {
  return `${x.site} #${x.seq} ${x.stack}@${x.rev} ${x.status}${x.reason ? ` (${x.reason})` : ''} [${x.deployment}]`;
}

/** `@2: 3  @1: 1  (1 converging)`: how many sites run which revision. */
function distribution(s: Fleet['stacks'][string]): string {
  const revs = Object.entries(s.revisions)
    .sort((a, b) => Number(b[0]) - Number(a[0]))
    .map(([r, n]) => `@${r}: ${n}`)
    .join('  ');
  return `${revs}${s.converging ? `  (${s.converging} converging)` : ''}`;
}

/** The human view (also the body of the terminal live display). */
export function render(f: Fleet, color: boolean): string {
  let t = `${fleetLine(f)}\n`;
  const stacks = Object.entries(f.stacks);
  t += '\nstacks (running revision: sites)\n';
  if (stacks.length === 0) t += '  none reported\n';
  for (const [name, s] of stacks) {
    t += `  ${name.padEnd(20)} ${distribution(s)}\n`;
  }
  t += `\ndeployments (latest ${f.deployments.length})\n`;
  if (f.deployments.length === 0) t += '  none\n';
  for (const p of f.deployments) t += `  ${progressRow(p, color).replace('\n', '\n  ')}\n`;
  if (f.failures.length > 0) {
    t += '\nrecent failures\n';
    for (const x of f.failures) t += `  ${failureText(x)}\n`;
  }
  if (f.offline.length > 0) {
    t += '\noffline\n';
    for (const o of f.offline.slice(0, 20))
      t += `  ${o.id} (last contact ${o.age === null ? 'never' : `${formatAge(o.age)} ago`})\n`;
    if (f.offline.length > 20) t += `  … ${f.offline.length - 20} more\n`;
  }
  return t;
}

/** What changed between two snapshots, one event per change. */
function changes(
  prev: { fleet: Fleet; sites: Site[] } | undefined,
  cur: { fleet: Fleet; sites: Site[] },
): { text: string; event: Record<string, unknown> }[] {
  const out: { text: string; event: Record<string, unknown> }[] = [];
  const f = cur.fleet;
  if (!prev || fleetLine(prev.fleet) !== fleetLine(f))
    out.push({ text: fleetLine(f), event: { event: 'fleet', sites: f.sites, inFlight: f.inFlight } });
  if (prev) {
    const was = new Map(prev.sites.map((s) => [s.id, s.online]));
    for (const s of cur.sites) {
      if (was.has(s.id) && was.get(s.id) === s.online) continue;
      const state = s.online === true ? 'online' : s.online === false ? 'offline' : 'unknown';
      out.push({
        text: `site ${s.id} ${was.has(s.id) ? state : `enrolled (${state})`}`,
        event: { event: 'site', site: s.id, online: s.online },
      });
    }
  }
  for (const [name, st] of Object.entries(f.stacks)) {
    const was = prev?.fleet.stacks[name];
    if (!was || distribution(was) !== distribution(st))
      out.push({ text: `stack ${name} ${distribution(st)}`, event: { event: 'stack', stack: name, ...st } });
  }
  const before = new Map((prev?.fleet.deployments ?? []).map((p) => [p.id, progressLine(p)]));
  for (const p of [...f.deployments].reverse()) {
    const line = progressLine(p);
    if (before.get(p.id) !== line) out.push({ text: line, event: { event: 'deployment', ...p } });
  }
  const seen = new Set((prev?.fleet.failures ?? []).map((x) => `${x.site}#${x.seq}`));
  for (const x of f.failures)
    if (!seen.has(`${x.site}#${x.seq}`) && prev)
      out.push({ text: `failure ${failureText(x)}`, event: { event: 'failure', ...x } });
  return out;
}

export async function status(ctx: Ctx, v: StatusValues, p: string[]): Promise<number> {
  positionals(p, 0, 0, '');
  if ((v.group?.length ?? 0) > 1) throw usageError('status takes one --group');
  const group = v.group?.[0];
  const limit = v.limit === undefined ? 5 : Number(v.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw usageError('--limit: expected 1..100');
  const intervalMs = durationOpt('interval', v.interval, 2000)!;
  const timeoutMs = durationOpt('timeout', v.timeout, undefined);
  const cache: ReasonCache = new Map();
  const color = useColor(ctx);
  if (!v.watch) {
    const { fleet } = await snapshot(ctx.api(), group, limit, cache);
    ctx.out(ctx.json ? json(fleet) : render(fleet, color));
    return EXIT.ok;
  }

  const tty = ctx.io.stdout.isTTY === true && !ctx.json;
  const frame = tty ? new LiveFrame(ctx.io.stdout) : undefined;
  let prev: Awaited<ReturnType<typeof snapshot>> | undefined;
  let problem: string | undefined;
  const header = (): string =>
    `outpost status  ${clock()}  every ${intervalMs / 1000}s${timeoutMs ? `, for ${timeoutMs / 1000}s` : ''}  (Ctrl-C to stop)`;
  let end: Awaited<ReturnType<typeof watchLoop>>;
  try {
    end = await watchLoop({
      ctx,
      intervalMs,
      timeoutMs,
      tick: async (api) => {
        const cur = await snapshot(api, group, limit, cache);
        if (problem && !frame) ctx.err(`${clock()} controller reachable again\n`);
        problem = undefined;
        if (frame) frame.draw(`${header()}\n\n${render(cur.fleet, color)}`);
        else
          for (const c of changes(prev, cur))
            ctx.out(
              ctx.json ? `${JSON.stringify({ at: cur.fleet.at, ...c.event })}\n` : `${clock()} ${c.text}\n`,
            );
        prev = cur;
        return false;
      },
      onTransient: (err) => {
        if (frame)
          frame.draw(
            `${header()}\n\n${err.message}; retrying\n${prev ? `\nlast seen:\n${render(prev.fleet, color)}` : ''}`,
          );
        else if (problem !== err.message) ctx.err(`${clock()} ${err.message}; retrying\n`);
        problem = err.message;
      },
    });
  } finally {
    frame?.close();
  }
  if (end === 'aborted') {
    if (!ctx.json) ctx.err('stopped\n');
    return EXIT.interrupted;
  }
  if (ctx.json) ctx.out(`${JSON.stringify({ at: new Date().toISOString(), event: 'end', result: end })}\n`);
  else ctx.out(`${clock()} stopped after --timeout ${(timeoutMs ?? 0) / 1000}s\n`);
  return EXIT.ok;
}

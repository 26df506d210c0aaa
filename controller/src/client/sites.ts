/** `outpost sites`: list, show, enrol, label, pin/unpin, groups. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { type ApiClient, type Command, type Site, type SiteDetail, usageError } from './api.js';
import { type Ctx, positionals } from './common.js';
import { formatAge, json, labelsText, listText, table } from './io.js';

export const SITES_HELP = `usage: outpost sites [list] [--group G] [--selector S] [--online|--offline]
       outpost sites show ID
       outpost sites enrol ID --uplink-key FILE [--group G ...] [--label k=v ...]
       outpost sites label ID k=v ... [k- ...]
       outpost sites pin ID STACK REV
       outpost sites unpin ID STACK
       outpost sites groups [create NAME [--description TEXT]]
       outpost sites maintenance ID [get]
       outpost sites maintenance ID set --tz ZONE --window 'DAYS HH:MM-HH:MM' [--window ...]
       outpost sites maintenance ID clear

list     sites in your groups: online, last contact age, groups, labels, and per stack the revision
         the agent wants / runs and its health (from the site's signed state)
show     one site: status, state, alarms, pins and its latest commands
enrol    register a site with its Ed25519 uplink public key (SPKI PEM or base64; admin), e.g.
         the uplink.pub 'outpost certs site ID' writes; the groups must exist ('sites groups create')
label    add or change labels (k=v) or remove them (k-); the other labels are kept
pin      deployments of other revisions of STACK skip the site; unpin removes the pin
groups   list site groups, or create one (admin)
maintenance
         the site's maintenance windows (its own, and the effective one, maybe from a group): stack
         commands created afterwards wait at the site until a window opens (SPEC [MW]); DAYS is
         'daily', a range 'mon-fri' or a list 'sat,sun'; an end at or before the start ends the next day

examples:
  outpost sites
  outpost sites --group north --json
  outpost sites list --selector region=north,tier!=lab --offline
  outpost sites show pump-07
  outpost sites groups create north
  outpost sites enrol pump-07 --uplink-key .data/certs/sites/pump-07/uplink.pub --group north --label region=north
  outpost sites label pump-07 tier=edge old-
  outpost sites pin pump-07 historian 3
  outpost sites maintenance pump-07 set --tz Europe/Berlin --window 'mon-fri 02:00-04:30' --window 'sun 22:00-02:00'
`;

/** All sites matching the filters, following the API's pages. */
export async function allSites(
  api: ApiClient,
  q: Record<string, string | boolean | undefined> = {},
): Promise<Site[]> {
  const out: Site[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await api.get<{ sites: Site[]; next?: string }>('/sites', {
      ...q,
      limit: 1000,
      ...(after ? { after } : {}),
    });
    out.push(...page.sites);
    if (!page.next) return out;
    after = page.next;
  }
}

export function onlineText(online: boolean | null): string {
  return online === true ? 'online' : online === false ? 'offline' : 'unknown';
}

interface StackLine {
  name: string;
  want: number;
  running: number;
  health: string;
}

/** Per-stack want/running/health: from the signed state, else from the retained status. */
export function stacksOf(site: Site): StackLine[] {
  const fromState = site.state?.stacks;
  if (fromState && fromState.length > 0)
    return fromState.map((s) => ({ name: s.name, want: s.want, running: s.rev, health: s.h }));
  return Object.entries(site.status?.stacks ?? {}).map(([name, s]) => ({
    name,
    want: s.desired,
    running: s.running,
    health: s.health,
  }));
}

function stacksText(site: Site): string {
  const s = stacksOf(site);
  return s.length > 0 ? s.map((x) => `${x.name} ${x.want}/${x.running} ${x.health}`).join(', ') : '-';
}

const path = (id: string): string => `/sites/${encodeURIComponent(id)}`;

export async function sites(ctx: Ctx, sub: string | undefined, v: SitesValues, p: string[]): Promise<number> {
  switch (sub ?? 'list') {
    case 'list':
    case 'ls':
      return list(ctx, v, p);
    case 'show':
      return show(ctx, positionals(p, 1, 1, 'the site id')[0]!);
    case 'enrol':
    case 'enroll':
      return enrol(ctx, v, positionals(p, 1, 1, 'the site id')[0]!);
    case 'label':
      return label(ctx, p);
    case 'pin':
      return pin(ctx, positionals(p, 3, 3, 'ID STACK REV'));
    case 'unpin':
      return unpin(ctx, positionals(p, 2, 2, 'ID STACK'));
    case 'groups':
      return groups(ctx, v, p);
    case 'maintenance':
    case 'mw':
      return maintenance(ctx, v, p);
    default:
      throw usageError(`unknown subcommand 'sites ${sub}'`);
  }
}

export interface SitesValues {
  group?: string[] | undefined;
  selector?: string | undefined;
  online?: boolean | undefined;
  offline?: boolean | undefined;
  'uplink-key'?: string | undefined;
  label?: string[] | undefined;
  description?: string | undefined;
  tz?: string | undefined;
  window?: string[] | undefined;
}

async function list(ctx: Ctx, v: SitesValues, p: string[]): Promise<number> {
  positionals(p, 0, 0, '');
  if ((v.group?.length ?? 0) > 1) throw usageError('sites list takes one --group');
  if (v.online && v.offline) throw usageError('--online and --offline exclude each other');
  const rows = await allSites(ctx.api(), {
    group: v.group?.[0],
    selector: v.selector,
    online: v.online ? true : v.offline ? false : undefined,
  });
  if (ctx.json) {
    ctx.out(json({ sites: rows }));
    return 0;
  }
  if (rows.length === 0) {
    ctx.out('no sites\n');
    return 0;
  }
  ctx.out(
    table(
      ['SITE', 'ONLINE', 'LAST CONTACT', 'GROUPS', 'LABELS', 'STACKS (want/running health)'],
      rows.map((s) => [
        s.id,
        onlineText(s.online),
        s.age === null ? 'never' : `${formatAge(s.age)} ago`,
        listText(s.groups),
        labelsText(s.labels),
        stacksText(s),
      ]),
    ),
  );
  return 0;
}

async function show(ctx: Ctx, id: string): Promise<number> {
  const api = ctx.api();
  const site = await api.get<SiteDetail>(path(id));
  const { commands } = await api.get<{ commands: Command[] }>(`${path(id)}/commands`, { limit: 10 });
  if (ctx.json) {
    ctx.out(json({ ...site, commands }));
    return 0;
  }
  const kv = (k: string, val: string): string => `  ${k.padEnd(14)}${val}\n`;
  let text = `site ${site.id}\n`;
  text += kv(
    'online',
    `${onlineText(site.online)}${site.statusAge === null ? '' : ` (status ${formatAge(site.statusAge)} old)`}`,
  );
  text += kv(
    'last contact',
    site.age === null ? 'never' : `${formatAge(site.age)} ago (${site.lastContact})`,
  );
  text += kv('groups', listText(site.groups));
  text += kv('labels', labelsText(site.labels));
  text += kv('enrolled', site.enrolledAt);
  text += kv('seq', `allocated ${site.seq.allocated}, issued ${site.seq.issued}`);
  text += kv('uplink key', site.uplinkKey);
  const pins = Object.entries(site.pins).map(([s, r]) => `${s}@${r}`);
  text += kv('pins', listText(pins));
  if (site.status?.controlAge !== undefined) text += kv('control age', formatAge(site.status.controlAge));
  const st = stacksOf(site);
  if (st.length > 0) {
    text += '\nstacks\n';
    text += indent(
      table(
        ['STACK', 'WANT', 'RUNNING', 'HEALTH'],
        st.map((s) => [s.name, String(s.want), String(s.running), s.health]),
      ),
    );
  }
  const alarms = site.state?.alarms ?? [];
  if (alarms.length > 0) {
    text += '\nalarms\n';
    text += indent(
      table(
        ['ALARM', 'SINCE', 'STACK', 'MESSAGE'],
        alarms.map((a) => [a.code, new Date(a.since * 1000).toISOString(), a.stack ?? '-', a.msg ?? '']),
      ),
    );
  }
  text += '\nlatest commands\n';
  text +=
    commands.length === 0
      ? '  none\n'
      : indent(
          table(
            ['SEQ', 'TYPE', 'STACK', 'STATUS', 'REASON', 'CREATED'],
            commands.map((c) => [
              String(c.seq),
              c.type,
              c.stack ? `${c.stack}${c.rev ? `@${c.rev}` : ''}` : '-',
              c.status,
              c.reason ?? '',
              c.createdAt,
            ]),
          ),
        );
  ctx.out(text);
  return 0;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
}

function parseLabels(
  items: readonly string[],
  allowRemove: boolean,
): { set: Record<string, string>; remove: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq > 0) set[item.slice(0, eq)] = item.slice(eq + 1);
    else if (allowRemove && item.endsWith('-') && item.length > 1) remove.push(item.slice(0, -1));
    else throw usageError(`expected k=v${allowRemove ? ' or k-' : ''}, got '${item}'`);
  }
  return { set, remove };
}

async function enrol(ctx: Ctx, v: SitesValues, id: string): Promise<number> {
  if (!v['uplink-key']) throw usageError('sites enrol needs --uplink-key FILE (SPKI PEM or base64)');
  const file = resolve(ctx.io.cwd ?? process.cwd(), v['uplink-key']);
  let uplinkKey: string;
  try {
    uplinkKey = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw usageError(`--uplink-key: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
  const { set } = parseLabels(v.label ?? [], false);
  const site = await ctx.api().post<Site>('/sites', {
    id,
    uplinkKey,
    ...(v.label?.length ? { labels: set } : {}),
    ...(v.group?.length ? { groups: v.group } : {}),
  });
  if (ctx.json) ctx.out(json(site));
  else
    ctx.out(
      `enrolled ${site.id} (groups ${listText(site.groups)}, labels ${labelsText(site.labels)})\n` +
        `next: start its agent with the certificate from 'outpost certs site ${site.id}'\n`,
    );
  return 0;
}

async function label(ctx: Ctx, p: string[]): Promise<number> {
  const [id, ...items] = positionals(p, 2, Number.POSITIVE_INFINITY, 'ID and k=v');
  const { set, remove } = parseLabels(items, true);
  const api = ctx.api();
  // The API replaces the whole map: read, merge, write (a concurrent label change in between is lost).
  const current = await api.get<Site>(path(id!));
  const labels: Record<string, string> = { ...current.labels, ...set };
  for (const k of remove) delete labels[k];
  const site = await api.patch<Site>(path(id!), { labels });
  if (ctx.json) ctx.out(json(site));
  else ctx.out(`${site.id} labels: ${labelsText(site.labels)}\n`);
  return 0;
}

function revArg(text: string): number {
  if (!/^[1-9]\d{0,9}$/.test(text)) throw usageError(`REV must be a revision number, got '${text}'`);
  return Number(text);
}

async function pin(ctx: Ctx, [id, stack, rev]: string[]): Promise<number> {
  const r = await ctx
    .api()
    .put<{ site: string; stack: string; rev: number }>(`${path(id!)}/pins/${encodeURIComponent(stack!)}`, {
      rev: revArg(rev!),
    });
  if (ctx.json) ctx.out(json(r));
  else ctx.out(`pinned ${r.site} to ${r.stack}@${r.rev}: deployments of other revisions skip it\n`);
  return 0;
}

async function unpin(ctx: Ctx, [id, stack]: string[]): Promise<number> {
  await ctx.api().delete(`${path(id!)}/pins/${encodeURIComponent(stack!)}`);
  if (ctx.json) ctx.out(json({ site: id, stack, pinned: false }));
  else ctx.out(`unpinned ${id} from ${stack}\n`);
  return 0;
}

interface Group {
  name: string;
  description: string;
  createdAt: string;
  sites: number;
}

async function groups(ctx: Ctx, v: SitesValues, p: string[]): Promise<number> {
  const [sub, name] = positionals(p, 0, 2, '');
  if (sub === 'create') {
    if (!name) throw usageError('missing the group name');
    const g = await ctx.api().post<Group>('/groups', {
      name,
      ...(v.description !== undefined ? { description: v.description } : {}),
    });
    ctx.out(ctx.json ? json(g) : `created group ${g.name}\n`);
    return 0;
  }
  if (sub !== undefined) throw usageError(`unknown subcommand 'sites groups ${sub}'`);
  const r = await ctx.api().get<{ groups: Group[] }>('/groups');
  if (ctx.json) ctx.out(json(r));
  else if (r.groups.length === 0) ctx.out('no groups\n');
  else
    ctx.out(
      table(
        ['GROUP', 'SITES', 'DESCRIPTION'],
        r.groups.map((g) => [g.name, String(g.sites), g.description]),
      ),
    );
  return 0;
}

// ---- maintenance windows ([MW-7]) -----------------------------------------------------------------

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

interface WindowArg {
  days?: number[];
  start: string;
  end: string;
}

/** `mon-fri 02:00-04:30`, `sat,sun 22:00-02:00`, `daily 01:00-03:00` (or just `01:00-03:00`). */
export function parseWindowArg(text: string): WindowArg {
  const parts = text.trim().split(/\s+/);
  const times = parts.pop() ?? '';
  const m = /^(\d{2}:\d{2})-(\d{2}:\d{2})$/.exec(times);
  if (!m || parts.length > 1) throw usageError(`--window: expected 'DAYS HH:MM-HH:MM', got '${text}'`);
  const [spec = 'daily'] = parts;
  if (spec === 'daily') return { start: m[1]!, end: m[2]! };
  const day = (d: string): number => {
    const i = DAYS.indexOf(d.toLowerCase().slice(0, 3));
    if (i < 0 || d.length < 3) throw usageError(`--window: unknown day '${d}' (mon..sun)`);
    return i + 1;
  };
  const days = new Set<number>();
  for (const item of spec.split(',')) {
    const [a, b] = item.split('-');
    if (b === undefined) days.add(day(a!));
    else
      for (let d = day(a!), end = day(b); ; d = (d % 7) + 1) {
        days.add(d);
        if (d === end) break;
      }
  }
  return { days: [...days].sort((x, y) => x - y), start: m[1]!, end: m[2]! };
}

interface MaintenanceView {
  scope: string;
  id: string;
  policy: { tz: string; windows: { days: number[]; start: string; end: string }[] } | null;
  updatedAt?: string;
  updatedBy?: string;
  effective?: ({ source: string } & NonNullable<MaintenanceView['policy']>) | null;
}

function windowsText(p: NonNullable<MaintenanceView['policy']>): string {
  return p.windows
    .map((w) => {
      const d = w.days.length === 7 ? 'daily' : w.days.map((x) => DAYS[x - 1]).join(',');
      return `${d} ${w.start}-${w.end}`;
    })
    .join('; ')
    .concat(` (${p.tz})`);
}

async function maintenance(ctx: Ctx, v: SitesValues, p: string[]): Promise<number> {
  const [id, sub = 'get'] = positionals(p, 1, 2, 'the site id');
  const url = `${path(id!)}/maintenance`;
  const api = ctx.api();
  if (sub === 'set') {
    if (!v.tz) throw usageError('sites maintenance set needs --tz ZONE (IANA, e.g. Europe/Berlin)');
    if (!v.window?.length) throw usageError("sites maintenance set needs --window 'DAYS HH:MM-HH:MM'");
    const r = await api.put<MaintenanceView>(url, { tz: v.tz, windows: v.window.map(parseWindowArg) });
    ctx.out(ctx.json ? json(r) : `${id} maintenance: ${r.policy ? windowsText(r.policy) : 'none'}\n`);
    return 0;
  }
  if (sub === 'clear') {
    await api.delete(url);
    ctx.out(ctx.json ? json({ site: id, policy: null }) : `${id} maintenance windows cleared\n`);
    return 0;
  }
  if (sub !== 'get') throw usageError(`unknown subcommand 'sites maintenance ID ${sub}'`);
  const r = await api.get<MaintenanceView>(url);
  if (ctx.json) ctx.out(json(r));
  else
    ctx.out(
      `site ${id}\n  own        ${r.policy ? windowsText(r.policy) : 'none'}\n` +
        `  effective  ${r.effective ? `${windowsText(r.effective)} from ${r.effective.source}` : 'none (always open)'}\n`,
    );
  return 0;
}

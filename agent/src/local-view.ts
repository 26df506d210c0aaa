/**
 * The technician's offline view of a site (`outpost agent status`): everything is read from the
 * agent's database, read-only, so it works with no network, no broker and no running agent.
 */
import type { StackState } from '../../protocol/src/index.js';
import { openAgentDbReadonly } from './core/db.js';
import { AgentStore, META } from './core/store.js';

export interface LocalStack {
  readonly name: string;
  /** Revision the agent converges to (0: not desired, e.g. removed). */
  readonly desired: number;
  /** Revision running at the last observation (0: none). */
  readonly running: number;
  readonly health: string;
  /** Commands for this stack not finished yet. */
  readonly queued: number;
  readonly services: readonly { n: string; st: string; h: string; rs?: number }[];
}

export interface LocalView {
  readonly site: string | undefined;
  readonly db: string;
  readonly trustVersion: number;
  /** Highest seq applied with nothing unfinished below it. */
  readonly applied: number;
  /** Highest seq received contiguously (or passed after a gap). */
  readonly received: number;
  readonly lastContact: string | undefined;
  readonly lastHeartbeat: string | undefined;
  /** When the stack view below was taken. */
  readonly observedAt: string | undefined;
  readonly stacks: readonly LocalStack[];
  readonly journal: Record<string, number>;
  readonly outbox: {
    readonly messages: number;
    readonly bytes: number;
    readonly acks: number;
    readonly states: number;
  };
  readonly drops: number;
  readonly alarms: readonly { code: string; since: string; msg?: string; stack?: string }[];
  readonly recent: readonly {
    seq: number;
    type: string;
    stack?: string;
    rev?: number;
    status: string;
    ack: string;
    rc?: string;
  }[];
}

const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : undefined);

export function readLocalView(dbPath: string): LocalView {
  const db = openAgentDbReadonly(dbPath);
  try {
    const store = new AgentStore(db);
    let observed: StackState[] = [];
    try {
      observed = JSON.parse(store.metaText(META.lastView) ?? '[]') as StackState[];
    } catch {
      observed = [];
    }
    const queued = new Map<string, number>();
    for (const r of store.openJournal()) if (r.stack) queued.set(r.stack, (queued.get(r.stack) ?? 0) + 1);
    const desired = new Map(store.desiredAll().map((d) => [d.name, d.rev]));
    const names = new Set([...desired.keys(), ...observed.map((s) => s.name), ...queued.keys()]);
    const stacks: LocalStack[] = [...names].sort().map((name) => {
      const o = observed.find((s) => s.name === name);
      return {
        name,
        desired: desired.get(name) ?? 0,
        running: o?.rev ?? 0,
        health: o?.h ?? 'unknown',
        queued: queued.get(name) ?? 0,
        services: o?.svc ?? [],
      };
    });
    const outbox = db
      .prepare<[], { kind: string; n: number; b: number }>(
        'SELECT kind, COUNT(*) AS n, SUM(bytes) AS b FROM outbox GROUP BY kind',
      )
      .all();
    const sum = (f: (r: { kind: string; n: number; b: number }) => number) =>
      outbox.reduce((a, r) => a + f(r), 0);
    return {
      site: store.metaText(META.site),
      db: dbPath,
      trustVersion: store.metaInt(META.trustVer),
      applied: store.metaInt(META.applied),
      received: store.metaInt(META.contig),
      lastContact: iso(store.metaInt(META.lastContact)),
      lastHeartbeat: iso(store.metaInt(META.lastHeartbeat)),
      observedAt: iso(store.metaInt(META.lastViewAt)),
      stacks,
      journal: store.journalCounts(),
      outbox: {
        messages: sum((r) => r.n),
        bytes: sum((r) => r.b),
        acks: outbox.find((r) => r.kind === 'ack')?.n ?? 0,
        states: outbox.find((r) => r.kind === 'state')?.n ?? 0,
      },
      drops: store.metaInt(META.drops),
      alarms: store.alarms().map((a) => ({
        code: a.code,
        since: new Date(a.since * 1000).toISOString(),
        ...(a.msg ? { msg: a.msg } : {}),
        ...(a.stack ? { stack: a.stack } : {}),
      })),
      recent: store.recentJournal(10).map((r) => ({
        seq: r.seq,
        type: r.type,
        ...(r.stack ? { stack: r.stack } : {}),
        ...(r.rev ? { rev: r.rev } : {}),
        status: r.status,
        ack: r.ack_st,
        ...(r.rc ? { rc: r.rc } : {}),
      })),
    };
  } finally {
    db.close();
  }
}

function ago(isoTime: string | undefined, nowMs: number): string {
  if (!isoTime) return 'never';
  const s = Math.max(0, Math.round((nowMs - Date.parse(isoTime)) / 1000));
  const human = s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
  return `${isoTime} (${human} ago)`;
}

function table(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd());
}

export function formatLocalView(v: LocalView, nowMs = Date.now()): string {
  const out: string[] = [];
  out.push(`site ${v.site ?? '(unknown)'}   database ${v.db}`);
  out.push(`trust root v${v.trustVersion}   applied seq ${v.applied}   received seq ${v.received}`);
  out.push(`last contact ${ago(v.lastContact, nowMs)}`);
  out.push(`last heartbeat ${ago(v.lastHeartbeat, nowMs)}`);
  out.push('');
  out.push(`stacks${v.observedAt ? ` (observed ${v.observedAt})` : ''}:`);
  if (v.stacks.length === 0) out.push('  (none)');
  else {
    out.push(
      ...table([
        ['NAME', 'DESIRED', 'RUNNING', 'HEALTH', 'QUEUED', 'SERVICES'],
        ...v.stacks.map((s) => [
          s.name,
          String(s.desired),
          String(s.running),
          s.health,
          String(s.queued),
          s.services.map((x) => `${x.n}:${x.st}/${x.h}`).join(' '),
        ]),
      ]),
    );
  }
  out.push('');
  out.push('alarms:');
  if (v.alarms.length === 0) out.push('  (none)');
  for (const a of v.alarms) {
    out.push(`  ${a.code}${a.stack ? ` [${a.stack}]` : ''}  since ${a.since}${a.msg ? `  ${a.msg}` : ''}`);
  }
  out.push('');
  out.push(
    `outbox: ${v.outbox.messages} waiting (${v.outbox.bytes} bytes: ${v.outbox.acks} acks, ${v.outbox.states} states); drops ${v.drops}`,
  );
  const j = Object.entries(v.journal)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  out.push(`journal: ${j || 'empty'}`);
  if (v.recent.length > 0) {
    out.push('recent commands:');
    out.push(
      ...table([
        ['SEQ', 'TYPE', 'STACK', 'REV', 'STATUS', 'ACK'],
        ...v.recent.map((r) => [
          String(r.seq),
          r.type,
          r.stack ?? '-',
          r.rev ? String(r.rev) : '-',
          r.status,
          `${r.ack}${r.rc ? ` (${r.rc})` : ''}`,
        ]),
      ]),
    );
  }
  return `${out.join('\n')}\n`;
}

/**
 * `outpost rollout create|list|show|watch|pause|resume|abort|approve`: staged rollouts over the API
 * (`/v1/rollouts`). `watch` (and `create --watch`) follows a rollout live: a redraw-in-place display
 * on a terminal (phases with progress bars, sites still in flight), one line per change otherwise,
 * JSON lines with --json. Ctrl-C stops watching; the rollout goes on.
 *
 * Wiring (client/cli.ts COMMANDS): `rollout: { help: ROLLOUT_HELP, sub: true, options: ROLLOUT_OPTIONS, run: rollout }`.
 */
import type { ParseArgsConfig } from 'node:util';
import { EXIT, usageError } from './api.js';
import { type Ctx, durationOpt, positionals } from './common.js';
import { parseTarget } from './deploy.js';
import { clock, json, table } from './io.js';
import { LiveFrame, targetText, useColor, watchLoop } from './progress.js';
import { stackRef } from './stacks.js';

export const ROLLOUT_HELP = `usage: outpost rollout create STACK[@REV] --to TARGET [options] [--watch]
       outpost rollout list [--stack S] [--state STATE]
       outpost rollout show ID
       outpost rollout watch ID [--timeout S] [--interval S]
       outpost rollout pause|resume|approve ID
       outpost rollout abort ID [--reason TEXT] [--no-rollback]

Staged rollout: a canary first, then batches; a site passes when it acks applied and reports the
revision healthy for --health seconds; the rollout aborts when --max-failures sites failed (or a
phase has fewer than --success healthy) and rolls every touched site back to its previous revision.

create options:
  --to TARGET           group:NAME | site:ID[,ID...] | tag:k=v[,...] (as for deploy)
  --canary N|N%         first phase: N sites or N% of the target (default 1)
  --batch N|N%|exp[:F]  later phases: N sites, N%, or exponential (canary size x F each time, F default 2)
                        (default: the rest in one batch)
  --success F           fraction of a phase's sites that must be healthy to go on, 0 < F <= 1 (default 1)
  --max-failures N|N%   abort once N sites (or N% of the target) failed (default 1)
  --deadline S          per site: healthy within S of its command or failed (default 1h)
  --health S            health gate: reported healthy this long after applied (default 60s)
  --delay S             wait between phases (default 0)
  --offline wait|skip   wait: an offline site gets it when back, failed at its deadline (default);
                        skip: offline sites are skipped
  --approval            wait for 'outpost rollout approve ID' before each phase after the canary
  --no-rollback         on abort, do not roll sites back
  --id ID               rollout id (default r-<hex>)
  --watch               follow it (see watch)

exit: 0 ok (watch: completed), 1 watch: aborted, rolled back or timed out, 3 forbidden, 4 invalid or unknown.

examples:
  outpost rollout create historian@4 --to group:north --canary 1 --batch exp --health 2m --watch
  outpost rollout create historian --to tag:tier=edge --canary 5% --batch 20% --max-failures 2%
  outpost rollout abort r-1a2b3c4d5e6f7a8b --reason "alarm flood at plant 3"
`;

export const ROLLOUT_OPTIONS = {
  to: { type: 'string', multiple: true },
  canary: { type: 'string' },
  batch: { type: 'string' },
  success: { type: 'string' },
  'max-failures': { type: 'string' },
  deadline: { type: 'string' },
  health: { type: 'string' },
  delay: { type: 'string' },
  offline: { type: 'string' },
  approval: { type: 'boolean' },
  'no-rollback': { type: 'boolean' },
  id: { type: 'string' },
  watch: { type: 'boolean', short: 'w' },
  timeout: { type: 'string' },
  interval: { type: 'string' },
  reason: { type: 'string' },
  stack: { type: 'string' },
  state: { type: 'string' },
  limit: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export interface RolloutValues {
  to?: string[] | undefined;
  canary?: string | undefined;
  batch?: string | undefined;
  success?: string | undefined;
  'max-failures'?: string | undefined;
  deadline?: string | undefined;
  health?: string | undefined;
  delay?: string | undefined;
  offline?: string | undefined;
  approval?: boolean | undefined;
  'no-rollback'?: boolean | undefined;
  id?: string | undefined;
  watch?: boolean | undefined;
  timeout?: string | undefined;
  interval?: string | undefined;
  reason?: string | undefined;
  stack?: string | undefined;
  state?: string | undefined;
  limit?: string | undefined;
}

interface SiteRow {
  site: string;
  phase: number | null;
  status: string;
  outcome: string | null;
  reason: string | null;
  seq: number | null;
}
interface PhaseRow {
  index: number;
  name: string;
  size: number;
  state: string;
  counts: Record<string, number>;
}
export interface RolloutDoc {
  id: string;
  stack: string;
  rev: number;
  target: unknown;
  state: string;
  reason: string | null;
  phase: number;
  phaseCount: number;
  total: number;
  failures: number;
  counts: Record<string, number>;
  phases: PhaseRow[];
  sites?: SiteRow[];
  nextPhaseAt: string | null;
}

const TERMINAL = new Set(['completed', 'aborted', 'rolled-back']);

/** `5` → {count: 5}; `10%` → {percent: 10}. */
function countOrPercent(
  name: string,
  text: string | undefined,
): { count: number } | { percent: number } | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(%)?$/.exec(text.trim());
  if (!m) throw usageError(`--${name}: expected N or N%, got '${text}'`);
  return m[2] ? { percent: Number(m[1]) } : { count: Number(m[1]) };
}

function batchOpt(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  const e = /^exp(?:onential)?(?::(\d+(?:\.\d+)?))?$/.exec(text.trim());
  if (e) return { exponential: e[1] ? { factor: Number(e[1]) } : {} };
  const c = countOrPercent('batch', text)!;
  return 'count' in c ? { size: c.count } : c;
}

const seconds = (name: string, text: string | undefined): number | undefined => {
  const ms = durationOpt(name, text, undefined);
  return ms === undefined ? undefined : Math.round(ms / 1000);
};

export function createBody(ref: string, v: RolloutValues): Record<string, unknown> {
  const { stack, rev } = stackRef(ref);
  if (v.to?.length !== 1)
    throw usageError('create needs exactly one --to group:NAME | site:ID[,ID] | tag:k=v');
  let success: number | undefined;
  if (v.success !== undefined) {
    success = Number(v.success);
    if (!Number.isFinite(success))
      throw usageError(`--success: expected a fraction such as 0.9, got '${v.success}'`);
  }
  if (v.offline !== undefined && v.offline !== 'wait' && v.offline !== 'skip')
    throw usageError(`--offline: expected wait or skip, got '${v.offline}'`);
  const canary = countOrPercent('canary', v.canary);
  const batches = batchOpt(v.batch);
  const health = v.health === '0' ? 0 : seconds('health', v.health);
  const delay = v.delay === '0' ? 0 : seconds('delay', v.delay);
  return {
    stack,
    ...(typeof rev === 'number' ? { rev } : {}),
    target: parseTarget(v.to[0]!),
    ...(v.id ? { id: v.id } : {}),
    ...(canary || batches
      ? { strategy: { ...(canary ? { canary } : {}), ...(batches ? { batches } : {}) } }
      : {}),
    ...(success !== undefined ? { successThreshold: success } : {}),
    ...(v['max-failures'] ? { failureThreshold: countOrPercent('max-failures', v['max-failures']) } : {}),
    ...(v.deadline ? { deadlineSec: seconds('deadline', v.deadline) } : {}),
    ...(health !== undefined ? { healthSec: health } : {}),
    ...(delay !== undefined ? { delaySec: delay } : {}),
    ...(v.offline ? { offline: v.offline } : {}),
    ...(v.approval ? { approval: true } : {}),
    ...(v['no-rollback'] ? { rollback: false } : {}),
  };
}

const countsText = (c: Record<string, number>): string =>
  Object.entries(c)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ') || '-';

function headline(r: RolloutDoc): string {
  const phase = r.phase >= r.phaseCount ? 'all phases done' : `phase ${r.phase + 1}/${r.phaseCount}`;
  return `rollout ${r.id} ${r.stack}@${r.rev} ${targetText(r.target)}: ${r.state}, ${phase}, ${r.total} site(s)${
    r.reason ? ` (${r.reason})` : ''
  }`;
}

const GOOD = new Set(['healthy']);
const BAD = new Set(['failed', 'rollback-failed', 'cancelled']);

function phaseBar(p: PhaseRow, width: number, color: boolean): string {
  if (p.size === 0) return ' '.repeat(width);
  const good = Object.entries(p.counts).reduce((n, [k, v]) => n + (GOOD.has(k) ? v : 0), 0);
  const bad = Object.entries(p.counts).reduce(
    (n, [k, v]) => n + (BAD.has(k) || k === 'rolled-back' ? v : 0),
    0,
  );
  const g = Math.round((good / p.size) * width);
  const b = Math.min(width - g, Math.round((bad / p.size) * width));
  const rest = width - g - b;
  const paint = (s: string, sgr: string): string => (color && s ? `\x1b[${sgr}m${s}\x1b[0m` : s);
  return paint('█'.repeat(g), '32') + paint('█'.repeat(b), '31') + paint('░'.repeat(rest), '2');
}

function detailText(r: RolloutDoc, color: boolean, maxSites: number): string {
  let text = `${headline(r)}\n`;
  for (const p of r.phases) {
    const mark = p.state === 'done' ? '✓' : p.state === 'running' ? '▶' : ' ';
    text += ` ${mark} ${p.name.padEnd(9)} [${phaseBar(p, 20, color)}] ${String(p.size).padStart(5)}  ${countsText(p.counts)}\n`;
  }
  if (r.state === 'awaiting-approval') text += `waiting for approval: outpost rollout approve ${r.id}\n`;
  if (r.nextPhaseAt) text += `next phase at ${r.nextPhaseAt}\n`;
  const open = (r.sites ?? []).filter(
    (s) => !['healthy', 'skipped', 'pending'].includes(s.status) || s.reason,
  );
  if (open.length > 0) {
    text += table(
      ['SITE', 'PHASE', 'STATUS', 'REASON'],
      open
        .slice(0, maxSites)
        .map((s) => [s.site, s.phase === null ? '-' : String(s.phase), s.status, s.reason ?? '']),
    );
    if (open.length > maxSites) text += `… ${open.length - maxSites} more (--json for all)\n`;
  }
  return text;
}

export async function rollout(
  ctx: Ctx,
  sub: string | undefined,
  v: RolloutValues,
  p: string[],
): Promise<number> {
  const api = () => ctx.api();
  switch (sub) {
    case 'create': {
      const [ref] = positionals(p, 1, 1, 'STACK[@REV]');
      const body = createBody(ref!, v);
      const r = await api().post<RolloutDoc>('/rollouts', body);
      if (!v.watch) {
        ctx.out(ctx.json ? json(r) : detailText(r, false, 20));
        return EXIT.ok;
      }
      if (ctx.json) ctx.out(`${JSON.stringify({ event: 'created', rollout: r })}\n`);
      else ctx.out(`${headline(r)}\n`);
      return watch(ctx, r.id, v);
    }
    case 'list':
    case undefined: {
      positionals(p, 0, 0, '');
      const { rollouts } = await api().get<{ rollouts: RolloutDoc[] }>('/rollouts', {
        ...(v.stack ? { stack: v.stack } : {}),
        ...(v.state ? { state: v.state } : {}),
        ...(v.limit ? { limit: v.limit } : {}),
      });
      if (ctx.json) {
        ctx.out(json({ rollouts }));
        return EXIT.ok;
      }
      ctx.out(
        table(
          ['ID', 'STACK', 'STATE', 'PHASE', 'SITES', 'FAILED', 'COUNTS'],
          rollouts.map((r) => [
            r.id,
            `${r.stack}@${r.rev}`,
            r.state,
            `${Math.min(r.phase + 1, r.phaseCount)}/${r.phaseCount}`,
            String(r.total),
            String(r.failures),
            countsText(r.counts),
          ]),
        ),
      );
      return EXIT.ok;
    }
    case 'show': {
      const [id] = positionals(p, 1, 1, 'the rollout ID');
      const r = await api().get<RolloutDoc>(`/rollouts/${encodeURIComponent(id!)}`);
      ctx.out(ctx.json ? json(r) : detailText(r, false, 200));
      return EXIT.ok;
    }
    case 'watch': {
      const [id] = positionals(p, 1, 1, 'the rollout ID');
      return watch(ctx, id!, v);
    }
    case 'pause':
    case 'resume':
    case 'approve':
    case 'abort': {
      const [id] = positionals(p, 1, 1, 'the rollout ID');
      const body =
        sub === 'abort'
          ? { ...(v.reason ? { reason: v.reason } : {}), ...(v['no-rollback'] ? { rollback: false } : {}) }
          : {};
      const r = await api().post<RolloutDoc>(`/rollouts/${encodeURIComponent(id!)}/${sub}`, body);
      ctx.out(ctx.json ? json(r) : `${headline(r)}\n`);
      return EXIT.ok;
    }
    default:
      throw usageError(
        `unknown subcommand '${sub}': create, list, show, watch, pause, resume, approve, abort`,
      );
  }
}

/** Follows a rollout until it ends (completed / aborted / rolled-back), the timeout, or Ctrl-C. */
async function watch(ctx: Ctx, id: string, v: RolloutValues): Promise<number> {
  const intervalMs = durationOpt('interval', v.interval, 1000)!;
  const timeoutMs = durationOpt('timeout', v.timeout, undefined);
  const tty = ctx.io.stdout.isTTY === true && !ctx.json;
  const color = useColor(ctx);
  const frame = tty ? new LiveFrame(ctx.io.stdout) : undefined;
  let last: RolloutDoc | undefined;
  let lastLine = '';
  const started = Date.now();
  let end: Awaited<ReturnType<typeof watchLoop>>;
  try {
    end = await watchLoop({
      ctx,
      intervalMs,
      timeoutMs,
      tick: async (client) => {
        const r = await client.get<RolloutDoc>(`/rollouts/${encodeURIComponent(id)}`);
        last = r;
        if (frame) {
          frame.draw(
            `${detailText(r, color, 10)}watching ${Math.round((Date.now() - started) / 1000)}s ` +
              '(Ctrl-C stops watching; the rollout goes on)',
          );
        } else {
          const line = `${headline(r)}; ${countsText(r.counts)}`;
          if (line !== lastLine) {
            lastLine = line;
            ctx.out(
              ctx.json
                ? `${JSON.stringify({ event: 'progress', at: new Date().toISOString(), state: r.state, phase: r.phase, counts: r.counts, failures: r.failures })}\n`
                : `${clock()} ${line}\n`,
            );
          }
        }
        return TERMINAL.has(r.state);
      },
      onTransient: (err) => {
        if (frame) frame.draw(`${last ? detailText(last, color, 10) : ''}${err.message}; retrying`);
        else ctx.err(`${clock()} ${err.message}; retrying\n`);
      },
    });
  } finally {
    frame?.close();
  }
  const ok = end === 'done' && last?.state === 'completed';
  if (ctx.json) ctx.out(`${JSON.stringify({ event: 'end', result: end, ok, rollout: last ?? null })}\n`);
  else if (end === 'aborted') ctx.err(`stopped watching ${id} (the rollout goes on)\n`);
  else if (end === 'timeout')
    ctx.out(`timed out watching ${id}: ${last ? headline(last) : 'no answer yet'}\n`);
  else if (last) ctx.out(`${headline(last)}\n`);
  if (end === 'aborted') return EXIT.interrupted;
  return ok ? EXIT.ok : EXIT.failed;
}

/** `outpost deploy STACK[@REV] --to ...`: create a deployment, print its commands, optionally follow it. */
import { type ApiClient, type Command, type Deployment, EXIT, isTransient, usageError } from './api.js';
import { type Ctx, durationOpt, positionals } from './common.js';
import { clock, json, table } from './io.js';
import {
  FINAL,
  LiveFrame,
  progressLine,
  progressOf,
  progressRow,
  targetText,
  useColor,
  watchLoop,
} from './progress.js';
import { stackRef } from './stacks.js';

export const DEPLOY_HELP = `usage: outpost deploy STACK[@REV] --to TARGET [--watch [--timeout S] [--interval S]]
                      [--ttl S] [--approve]

Creates one signed stack.apply command per targeted site (sites pinned to another revision are
skipped) and prints the deployment id and each site's command. Without @REV: the latest revision.

TARGET is exactly one of:
  group:NAME            every site in a group
  site:ID[,ID...]       explicit sites
  tag:k=v[,k2=v2...]    sites whose labels match every term (also k!=v, k, !k)

  --watch               follow the deployment until every site has reported applied or failed
                        (a live progress bar on a terminal, one line per change otherwise)
  --timeout S           give up watching after S (default 10m); exit 1 if not finished
  --interval S          poll period while watching (default 1s)
  --ttl S               command lifetime (default: the controller's outbox.commandTtlSec)
  --approve             admin: approve a critical revision with the controller's approver key

exit: 0 created (with --watch: every site applied), 1 with --watch: a site failed, was superseded,
or the timeout passed first; 3 your role or groups do not allow it; 4 unknown stack/revision/site.

examples:
  outpost deploy historian --to group:north
  outpost deploy historian@3 --to site:pump-07,pump-09 --watch
  outpost deploy historian --to tag:region=north,tier!=lab --watch --timeout 15m
`;

export interface DeployValues {
  to?: string[] | undefined;
  watch?: boolean | undefined;
  timeout?: string | undefined;
  interval?: string | undefined;
  ttl?: string | undefined;
  approve?: boolean | undefined;
}

export function parseTarget(text: string): Record<string, unknown> {
  const i = text.indexOf(':');
  const kind = i > 0 ? text.slice(0, i) : '';
  const rest = text.slice(i + 1).trim();
  if (!rest) throw usageError(`--to ${text}: nothing after '${kind}:'`);
  switch (kind) {
    case 'group':
      return { group: rest };
    case 'site':
    case 'sites': {
      const sites = rest
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      return { sites: [...new Set(sites)] };
    }
    case 'tag':
    case 'tags':
    case 'selector':
      return { selector: rest };
    default:
      throw usageError(`--to: expected group:NAME, site:ID[,ID] or tag:k=v[,...], got '${text}'`);
  }
}

const MAX_ROWS = 50;

function summary(d: Deployment): string {
  const p = progressOf(d);
  let text = `deployment ${d.id}: ${d.stack}@${d.rev} to ${p.target}, ${d.commands.length} site(s)\n`;
  if (d.commands.length > 0) {
    const rows = d.commands.slice(0, MAX_ROWS).map((c) => [c.site, String(c.seq), c.status]);
    text += table(['SITE', 'SEQ', 'STATUS'], rows);
    if (d.commands.length > MAX_ROWS) text += `… and ${d.commands.length - MAX_ROWS} more (--json for all)\n`;
  }
  for (const s of d.skipped)
    text += `skipped ${s.site}: ${s.pinnedRev !== undefined ? `pinned to ${d.stack}@${s.pinnedRev}` : s.reason}\n`;
  return text;
}

export async function deploy(ctx: Ctx, v: DeployValues, p: string[]): Promise<number> {
  const [ref] = positionals(p, 1, 1, 'STACK[@REV]');
  const { stack, rev } = stackRef(ref!);
  if (!v.to || v.to.length === 0) throw usageError('deploy needs --to group:NAME | site:ID[,ID] | tag:k=v');
  if (v.to.length > 1) throw usageError('give exactly one --to');
  const target = parseTarget(v.to[0]!);
  const ttl = durationOpt('ttl', v.ttl, undefined);
  const timeoutMs = durationOpt('timeout', v.timeout, 600_000);
  const intervalMs = durationOpt('interval', v.interval, 1000)!;
  if (!v.watch && (v.timeout !== undefined || v.interval !== undefined))
    throw usageError('--timeout and --interval go with --watch');

  const d = await ctx.api().post<Deployment>('/deployments', {
    stack,
    ...(typeof rev === 'number' ? { rev } : {}),
    target,
    ...(ttl !== undefined ? { ttlSec: Math.round(ttl / 1000) } : {}),
    ...(v.approve ? { approve: true } : {}),
  });
  if (ctx.json && !v.watch) {
    ctx.out(json(d));
    return EXIT.ok;
  }
  if (ctx.json) ctx.out(`${JSON.stringify({ event: 'created', deployment: d })}\n`);
  else ctx.out(summary(d));
  if (!v.watch) return EXIT.ok;
  return follow(ctx, d, intervalMs, timeoutMs);
}

/** Follows a deployment until every command is final, the timeout passes, or Ctrl-C. */
async function follow(
  ctx: Ctx,
  first: Deployment,
  intervalMs: number,
  timeoutMs: number | undefined,
): Promise<number> {
  const tty = ctx.io.stdout.isTTY === true && !ctx.json;
  const color = useColor(ctx);
  const frame = tty ? new LiveFrame(ctx.io.stdout) : undefined;
  let last = first;
  let lastLine = '';
  let unreachable = false;
  const started = Date.now();
  const report = (d: Deployment): void => {
    const p = progressOf(d);
    if (frame) {
      const waiting = d.commands.filter((c) => !FINAL.has(c.status));
      const lines = [
        `${progressRow(p, color)}`,
        ...waiting.slice(0, 10).map((c) => `    ${c.site.padEnd(20)} ${c.status}`),
        ...(waiting.length > 10 ? [`    … ${waiting.length - 10} more waiting`] : []),
        `watching ${Math.round((Date.now() - started) / 1000)}s (Ctrl-C stops watching; the deployment goes on)`,
      ];
      frame.draw(lines.join('\n'));
      return;
    }
    const line = progressLine(p);
    if (line === lastLine) return;
    lastLine = line;
    ctx.out(
      ctx.json
        ? `${JSON.stringify({ event: 'progress', at: new Date().toISOString(), ...p })}\n`
        : `${clock()} ${line}\n`,
    );
  };
  let end: Awaited<ReturnType<typeof watchLoop>>;
  try {
    end = await watchLoop({
      ctx,
      intervalMs,
      timeoutMs,
      tick: async (api) => {
        last = await api.get<Deployment>(`/deployments/${first.id}`);
        if (unreachable && !frame) ctx.err(`${clock()} controller reachable again\n`);
        unreachable = false;
        report(last);
        return progressOf(last).done;
      },
      onTransient: (err) => {
        if (frame) frame.draw(`${progressRow(progressOf(last), color)}\n${err.message}; retrying`);
        else if (!unreachable) ctx.err(`${clock()} ${err.message}; retrying\n`);
        unreachable = true;
      },
    });
  } finally {
    frame?.close();
  }
  return finish(ctx, last, end);
}

async function finish(ctx: Ctx, d: Deployment, end: 'done' | 'timeout' | 'aborted'): Promise<number> {
  const p = progressOf(d);
  const notApplied = d.commands.filter((c) => c.status !== 'applied');
  const failed = d.commands.filter((c) => FINAL.has(c.status) && c.status !== 'applied');
  let reasons: Awaited<ReturnType<typeof failureReasons>> = [];
  if (end !== 'aborted') {
    try {
      reasons = await failureReasons(ctx.api(), failed.slice(0, 20));
    } catch {
      reasons = failed.slice(0, 20).map((c) => ({ ...c, reason: null }));
    }
  }
  const code =
    end === 'aborted' ? EXIT.interrupted : notApplied.length === 0 && end === 'done' ? EXIT.ok : EXIT.failed;
  if (ctx.json) {
    ctx.out(
      `${JSON.stringify({ event: 'end', result: end, ok: code === EXIT.ok, deployment: d, failures: reasons })}\n`,
    );
    return code;
  }
  if (end === 'aborted') {
    ctx.err(`stopped watching ${d.id} (the deployment goes on): ${progressLine(p)}\n`);
    return code;
  }
  if (end === 'timeout') {
    const waiting = d.commands.filter((c) => !FINAL.has(c.status));
    ctx.out(
      `timed out: ${waiting.length} of ${d.commands.length} site(s) not finished: ` +
        `${waiting
          .slice(0, 10)
          .map((c) => `${c.site} ${c.status}`)
          .join(', ')}${waiting.length > 10 ? ', …' : ''}\n`,
    );
  }
  for (const f of reasons) ctx.out(`${f.site} #${f.seq} ${f.status}${f.reason ? ` (${f.reason})` : ''}\n`);
  ctx.out(
    `${d.id} ${d.stack}@${d.rev} ${targetText(d.target)}: ${p.counts.applied}/${p.total} applied` +
      `${p.counts.failed ? `, ${p.counts.failed} failed` : ''}${p.counts.superseded ? `, ${p.counts.superseded} superseded` : ''}\n`,
  );
  return code;
}

/** The reason code of each final command (one request each); null when it cannot be read. */
export async function failureReasons(
  api: ApiClient,
  cmds: readonly { site: string; seq: number; status: string }[],
): Promise<Pick<Command, 'site' | 'seq' | 'status' | 'reason'>[]> {
  const out: Pick<Command, 'site' | 'seq' | 'status' | 'reason'>[] = [];
  for (const c of cmds) {
    let reason: string | null = null;
    try {
      reason = (await api.get<Command>(`/sites/${encodeURIComponent(c.site)}/commands/${c.seq}`)).reason;
    } catch (err) {
      if (isTransient(err) || (err as { code?: string }).code === 'aborted') throw err;
      // out of scope or gone: the status without a reason is still worth showing
    }
    out.push({ site: c.site, seq: c.seq, status: c.status, reason });
  }
  return out;
}

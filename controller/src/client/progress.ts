/**
 * Deployment progress and the live display: command statuses grouped into the five columns people
 * watch (pending, sent, accepted, applied, failed), text progress bars, a redraw-in-place display for
 * terminals (plain ANSI: cursor up, erase line, erase below, hide/show cursor) and the bounded polling
 * loop shared by `status --watch` and `deploy --watch`.
 */
import { type ApiClient, type ClientError, type Deployment, isTransient } from './api.js';
import type { Ctx } from './common.js';
import { type Out, pause } from './io.js';

export const BUCKETS = ['pending', 'sent', 'accepted', 'applied', 'failed'] as const;
export type Bucket = (typeof BUCKETS)[number];

/** A command status → its column; `superseded` (a newer revision replaced it) is counted apart. */
export function bucketOf(status: string): Bucket | 'superseded' {
  switch (status) {
    case 'pending':
      return 'pending';
    case 'published':
      return 'sent';
    case 'accepted':
    case 'deferred':
      return 'accepted';
    case 'applied':
      return 'applied';
    case 'superseded':
      return 'superseded';
    default:
      // failed, rejected, rolled-back, expired, cancelled
      return 'failed';
  }
}

export const FINAL = new Set([
  'applied',
  'failed',
  'rejected',
  'superseded',
  'rolled-back',
  'expired',
  'cancelled',
]);

export interface Progress {
  readonly id: string;
  readonly stack: string;
  readonly rev: number;
  readonly target: string;
  readonly total: number;
  readonly counts: Record<Bucket | 'superseded', number>;
  /** Every command has reached a final status. */
  readonly done: boolean;
  readonly skipped: number;
}

/** `{group: 'north'}` → `group:north`, `{sites: [a, b]}` → `site:a,b`, `{selector}` → `tag:...`. */
export function targetText(target: unknown): string {
  const t = (target ?? {}) as { sites?: string[]; group?: string; selector?: string };
  if (t.group) return `group:${t.group}`;
  if (t.selector) return `tag:${t.selector}`;
  if (t.sites) {
    const shown = t.sites.slice(0, 3).join(',');
    return `site:${shown}${t.sites.length > 3 ? `,… (${t.sites.length})` : ''}`;
  }
  return '?';
}

export function progressOf(d: Deployment): Progress {
  const counts: Record<Bucket | 'superseded', number> = {
    pending: 0,
    sent: 0,
    accepted: 0,
    applied: 0,
    failed: 0,
    superseded: 0,
  };
  for (const c of d.commands) counts[bucketOf(c.status)]++;
  return {
    id: d.id,
    stack: d.stack,
    rev: d.rev,
    target: targetText(d.target),
    total: d.commands.length,
    counts,
    done: d.commands.every((c) => FINAL.has(c.status)),
    skipped: d.skipped.length,
  };
}

export function countsText(p: Progress): string {
  const sup = p.counts.superseded > 0 ? `, superseded ${p.counts.superseded}` : '';
  return (
    `applied ${p.counts.applied}/${p.total} (pending ${p.counts.pending}, sent ${p.counts.sent}, ` +
    `accepted ${p.counts.accepted}, failed ${p.counts.failed}${sup})`
  );
}

/** One line for logs and pipes. */
export function progressLine(p: Progress): string {
  return `deployment ${p.id} ${p.stack}@${p.rev} ${p.target}: ${countsText(p)}${p.done ? ' done' : ''}`;
}

const SGR = {
  applied: '\x1b[32m',
  failed: '\x1b[31m',
  accepted: '\x1b[36m',
  sent: '\x1b[33m',
  pending: '\x1b[2m',
  superseded: '\x1b[90m',
  bold: '\x1b[1m',
  reset: '\x1b[0m',
} as const;
const GLYPH = { applied: '█', failed: '█', accepted: '▓', sent: '▒', pending: '░', superseded: '·' } as const;

/** A bar of `width` cells, split by the largest-remainder method so the cells add up exactly. */
export function bar(p: Progress, width: number, color: boolean): string {
  const order = ['applied', 'failed', 'accepted', 'sent', 'pending', 'superseded'] as const;
  if (p.total === 0) return ' '.repeat(width);
  const exact = order.map((k) => (p.counts[k] / p.total) * width);
  const cells = exact.map(Math.floor);
  let left = width - cells.reduce((a, b) => a + b, 0);
  const byRemainder = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0]);
  for (const [, i] of byRemainder) {
    if (left <= 0) break;
    cells[i] = (cells[i] ?? 0) + 1;
    left--;
  }
  return order
    .map((k, i) => {
      const s = GLYPH[k].repeat(cells[i] ?? 0);
      return color && s ? `${SGR[k]}${s}${SGR.reset}` : s;
    })
    .join('');
}

export function progressRow(p: Progress, color: boolean): string {
  const title = `${p.id} ${p.stack}@${p.rev} ${p.target}`;
  return `${title}\n    [${bar(p, 30, color)}] ${countsText(p)}${p.done ? ' ✓' : ''}`;
}

const ESC = '\x1b[';
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escape sequences
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;

/** Cuts a line to `cols` visible characters (colour codes are dropped from a cut line). */
function clip(line: string, cols: number): string {
  const plain = line.replace(ANSI, '');
  if ([...plain].length < cols) return line;
  return [...plain].slice(0, Math.max(1, cols - 1)).join('');
}

/**
 * Redraws a block of lines in place on a terminal: moves the cursor back to the block's first line,
 * rewrites each line (erasing what was there) and erases anything below.
 */
export class LiveFrame {
  private drawn = 0;
  private started = false;

  constructor(private readonly out: Out) {}

  draw(text: string): void {
    // A pseudo-terminal without a size reports 0 columns.
    const cols = (this.out.columns ?? 0) >= 20 ? this.out.columns! : 100;
    let lines = text.replace(/\n$/, '').split('\n');
    // Taller than the screen, the cursor cannot climb back to the top: cut the frame instead.
    const rows = this.out.rows ?? 0;
    if (rows >= 5 && lines.length > rows - 1) {
      const cut = lines.length - (rows - 2);
      lines = [...lines.slice(0, rows - 2), `… ${cut} more line(s): enlarge the terminal, or use --json`];
    }
    let s = this.started ? '' : `${ESC}?25l`;
    this.started = true;
    if (this.drawn > 0) s += `${ESC}${this.drawn}F`;
    for (const l of lines) s += `${ESC}2K${clip(l, cols)}\n`;
    s += `${ESC}J`;
    this.out.write(s);
    this.drawn = lines.length;
  }

  /** Shows the cursor again (always call, also on Ctrl-C). */
  close(): void {
    if (this.started) this.out.write(`${ESC}?25h`);
    this.started = false;
  }
}

export function useColor(ctx: Ctx): boolean {
  return (
    ctx.io.stdout.isTTY === true && ctx.io.env['NO_COLOR'] === undefined && ctx.io.env['TERM'] !== 'dumb'
  );
}

export type WatchEnd = 'done' | 'timeout' | 'aborted';

/**
 * Calls `tick` every `intervalMs` until it returns true (done), `timeoutMs` passes, or the user
 * interrupts. `tick` gets a client whose requests are cut off by the deadline and by Ctrl-C.
 * Unreachable or timed-out requests are reported through `onTransient` and retried; other errors end
 * the watch by throwing.
 */
export async function watchLoop(opts: {
  readonly ctx: Ctx;
  readonly intervalMs: number;
  readonly timeoutMs: number | undefined;
  readonly tick: (api: ApiClient) => Promise<boolean>;
  readonly onTransient: (err: ClientError) => void;
}): Promise<WatchEnd> {
  const { ctx } = opts;
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  ctx.signal.addEventListener('abort', onAbort, { once: true });
  if (ctx.signal.aborted) stop.abort();
  let timedOut = false;
  const timer =
    opts.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          stop.abort();
        }, opts.timeoutMs);
  const api = ctx.api().withSignal(stop.signal);
  try {
    for (;;) {
      if (stop.signal.aborted) return timedOut ? 'timeout' : 'aborted';
      try {
        if (await opts.tick(api)) return 'done';
      } catch (err) {
        if (stop.signal.aborted) return timedOut ? 'timeout' : 'aborted';
        if (isTransient(err)) opts.onTransient(err);
        else throw err;
      }
      await pause(opts.intervalMs, stop.signal);
    }
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener('abort', onAbort);
  }
}

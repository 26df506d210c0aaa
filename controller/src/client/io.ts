/**
 * The CLI's injectable world: output streams, environment, working directory and an abort signal
 * (tests pass their own; `outpost` passes the process's). Plus plain-text formatting helpers.
 */

export interface Out {
  write(chunk: string): unknown;
  /** A terminal: `status --watch` redraws in place instead of printing a line per change. */
  readonly isTTY?: boolean;
  readonly columns?: number;
  readonly rows?: number;
}

export interface Io {
  readonly stdout: Out;
  readonly stderr: Out;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Base of relative paths (the default token file). Default: process.cwd(). */
  readonly cwd?: string;
  /**
   * Aborting ends a `--watch` the way Ctrl-C does (exit 130). Without it, the CLI listens for
   * SIGINT/SIGTERM itself while watching.
   */
  readonly signal?: AbortSignal;
}

export function processIo(): Io {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() };
}

/** Seconds → `4s`, `12m`, `3h`, `2d`; null → `never`. */
export function formatAge(sec: number | null | undefined): string {
  if (sec === null || sec === undefined) return 'never';
  const s = Math.max(0, Math.round(sec));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** `30`, `1.5`, `30s`, `5m`, `2h` → milliseconds; undefined when not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  return Number.isFinite(ms) ? ms : undefined;
}

/** Left-aligned columns separated by two spaces; no trailing blanks. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

export function labelsText(labels: Readonly<Record<string, string>>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return parts.length > 0 ? parts.join(',') : '-';
}

export function listText(items: readonly string[]): string {
  return items.length > 0 ? items.join(',') : '-';
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

export function clock(now = new Date()): string {
  return now.toISOString().slice(11, 19);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

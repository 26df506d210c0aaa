/**
 * Child processes for tests: a TypeScript entry under `node --import tsx`, or any binary, with
 * captured output, bounded waits, signals (SIGKILL at a named point is the crash model, DESIGN §8)
 * and cleanup.
 *
 * Cleanup: a child spawned inside a test is SIGKILLed when that test finishes, if still running.
 * Others are ended by `killAll()` (call it in afterAll) or, at the latest, by the globalSetup
 * teardown, which SIGKILLs every recorded child still alive (matched by pid and start time).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ENV, REPO_ROOT } from './env.js';
import { onCurrentTestFinished } from './tmp.js';
import { sleep, type WaitOptions } from './wait.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  /** Working directory (default: the repository root). */
  cwd?: string;
  /** Extra environment; `undefined` values remove a variable. */
  env?: Record<string, string | undefined>;
  /** Start from an empty environment instead of this process's (default false). */
  cleanEnv?: boolean;
  /** Label for messages (default: the script's or binary's base name). */
  name?: string;
  /** Copy the child's output live to stderr (default: when OUTPOST_TEST_ECHO=1). */
  echo?: boolean;
}

export interface Spawned {
  readonly name: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves once, when the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  /** The exit status, once exited. */
  readonly exitInfo: ExitInfo | undefined;
  stdout(): string;
  stderr(): string;
  /** stdout and stderr interleaved in arrival order. */
  output(): string;
  /**
   * Waits (bounded, default 15 s) until the output contains `pattern`; resolves with the matching
   * line. Fails at once if the process exits first.
   */
  waitForOutput(pattern: string | RegExp, opts?: WaitOptions): Promise<string>;
  /**
   * Sends `signal` (default SIGTERM) and waits for the exit. If the process is still there after
   * `timeoutMs` (default 10 s), SIGKILLs it. Resolves with the exit status.
   */
  kill(signal?: NodeJS.Signals, opts?: { timeoutMs?: number }): Promise<ExitInfo>;
}

const MAX_CAPTURE = 4 * 1024 * 1024;
const live = new Set<Spawned>();
const requireHere = createRequire(import.meta.url);

/** `node --import tsx <script> ...args`; `script` is absolute or relative to the repository root. */
export function spawnNode(
  script: string,
  args: readonly string[] = [],
  env: Record<string, string | undefined> = {},
  opts: Omit<SpawnOptions, 'env'> = {},
): Spawned {
  const path = isAbsolute(script) ? script : resolve(REPO_ROOT, script);
  const tsx = pathToFileURL(requireHere.resolve('tsx')).href;
  return spawnProcess(process.execPath, ['--import', tsx, path, ...args], {
    ...opts,
    env,
    name: opts.name ?? script.split('/').pop() ?? script,
  });
}

/** Any program, with the same capture, signals and cleanup as spawnNode. */
export function spawnProcess(command: string, args: readonly string[], opts: SpawnOptions = {}): Spawned {
  const env: Record<string, string> = {};
  const base = opts.cleanEnv ? {} : process.env;
  for (const [k, v] of Object.entries({ ...base, ...opts.env })) if (v !== undefined) env[k] = v;
  const name = opts.name ?? command.split('/').pop() ?? command;
  const child = spawn(command, [...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const echo = opts.echo ?? process.env['OUTPOST_TEST_ECHO'] === '1';
  let out = '';
  let err = '';
  let all = '';
  const cap = (s: string): string => (s.length > MAX_CAPTURE ? s.slice(s.length - MAX_CAPTURE) : s);
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (d: string) => {
    out = cap(out + d);
    all = cap(all + d);
    if (echo) process.stderr.write(prefixLines(name, d));
  });
  child.stderr?.on('data', (d: string) => {
    err = cap(err + d);
    all = cap(all + d);
    if (echo) process.stderr.write(prefixLines(name, d));
  });

  let exitInfo: ExitInfo | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<ExitInfo>((resolveExit) => {
    child.once('error', (e) => {
      // spawn failure (ENOENT, EACCES): no 'exit' event follows.
      spawnError = e;
      if (child.pid === undefined) {
        exitInfo = { code: null, signal: null };
        resolveExit(exitInfo);
      }
    });
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      exitInfo ??= { code, signal };
      resolveExit(exitInfo);
    };
    // 'close' comes after the output is drained; a grandchild holding the pipes open must not
    // delay the exit status forever, so 'exit' settles it 2 s later at the latest.
    child.once('close', done);
    child.once('exit', (code, signal) => setTimeout(() => done(code, signal), 2_000).unref());
  });

  const pid = child.pid ?? -1;
  const pidFile = trackPid(pid);

  const handle: Spawned = {
    name,
    pid,
    child,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    stdout: () => out,
    stderr: () => err,
    output: () => all,
    async waitForOutput(pattern, wopts = {}) {
      const timeoutMs = wopts.timeoutMs ?? 15_000;
      const intervalMs = wopts.intervalMs ?? 20;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = findLine(all, pattern);
        if (line !== undefined) return line;
        if (exitInfo) {
          throw new Error(
            `${name} exited (${describeExit(exitInfo)}${spawnError ? `, ${spawnError.message}` : ''}) ` +
              `before printing ${String(pattern)}; output:\n${tail(all)}`,
          );
        }
        if (Date.now() >= deadline) {
          throw new Error(
            `${name} did not print ${String(pattern)}${wopts.message ? ` (${wopts.message})` : ''} ` +
              `within ${timeoutMs} ms; output:\n${tail(all)}`,
          );
        }
        await Promise.race([sleep(intervalMs), exited]);
      }
    },
    async kill(signal = 'SIGTERM', kopts = {}) {
      if (exitInfo) return exitInfo;
      child.kill(signal);
      const timeoutMs = kopts.timeoutMs ?? 10_000;
      const first = await Promise.race([exited, sleep(timeoutMs).then(() => undefined)]);
      if (first) return first;
      child.kill('SIGKILL');
      const second = await Promise.race([exited, sleep(5_000).then(() => undefined)]);
      if (!second) throw new Error(`${name} (pid ${pid}) survived SIGKILL for 5 s`);
      return second;
    },
  };
  live.add(handle);
  void exited.then(() => {
    live.delete(handle);
    if (pidFile) rmSync(pidFile, { force: true });
  });
  onCurrentTestFinished(async () => {
    if (!handle.exitInfo) await handle.kill('SIGKILL');
  });
  return handle;
}

/** Sends `signal` (default SIGKILL) to every child still running and waits for them (bounded). */
export async function killAll(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await Promise.all([...live].map((p) => p.kill(signal, { timeoutMs: 5_000 })));
}

/** Children spawned by this worker that are still running. */
export function runningChildren(): Spawned[] {
  return [...live];
}

export function describeExit(e: ExitInfo): string {
  return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
}

/** Last lines of captured output, for error messages. */
export function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

function findLine(text: string, pattern: string | RegExp): string | undefined {
  for (const line of text.split('\n')) {
    if (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line)) return line;
  }
  return undefined;
}

function prefixLines(name: string, chunk: string): string {
  return chunk
    .split('\n')
    .map((l, i, a) => (i === a.length - 1 && l === '' ? '' : `[${name}] ${l}\n`))
    .join('');
}

/** /proc/<pid>/stat field 22 (start time in clock ticks): tells a pid's reuse apart. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Records a process (by pid and start time) in the run's scratch root, so the globalSetup teardown
 * SIGKILLs it if it is still alive at the end of the run. For detached daemons tests start.
 */
export function trackPid(pid: number): string | undefined {
  const root = process.env[ENV.tmpRoot];
  if (!root || pid <= 0) return undefined;
  const start = processStartTime(pid);
  if (start === undefined) return undefined;
  const dir = join(root, '.pids');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, String(pid));
  writeFileSync(file, start);
  return file;
}

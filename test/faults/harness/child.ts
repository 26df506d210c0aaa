/**
 * Child processes that outlive the test that started them. test/helpers' spawnNode SIGKILLs a child
 * when the test that spawned it finishes; a fault system shared by several tests of a file restarts
 * its components inside those tests, so they must belong to the system instead (FaultSystem.close
 * ends them). Same shape as the helpers' `Spawned`; recorded with `trackPid`, so the run's teardown
 * still reaps anything left behind.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  describeExit,
  type ExitInfo,
  REPO_ROOT,
  type Spawned,
  sleep,
  tail,
  trackPid,
} from '../../helpers/index.js';

const MAX_CAPTURE = 4 * 1024 * 1024;
const requireHere = createRequire(import.meta.url);

export function spawnChild(
  script: string,
  args: readonly string[],
  env: Record<string, string | undefined>,
  opts: { name: string; echo?: boolean },
): Spawned {
  const path = isAbsolute(script) ? script : resolve(REPO_ROOT, script);
  const tsx = pathToFileURL(requireHere.resolve('tsx')).href;
  const merged: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...env })) if (v !== undefined) merged[k] = v;
  const child = spawn(process.execPath, ['--import', tsx, path, ...args], {
    cwd: REPO_ROOT,
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const name = opts.name;
  let out = '';
  let err = '';
  let all = '';
  const cap = (s: string): string => (s.length > MAX_CAPTURE ? s.slice(s.length - MAX_CAPTURE) : s);
  const echo = opts.echo ?? process.env['OUTPOST_TEST_ECHO'] === '1';
  const take = (which: 'out' | 'err') => (d: string) => {
    if (which === 'out') out = cap(out + d);
    else err = cap(err + d);
    all = cap(all + d);
    if (echo) process.stderr.write(d.replace(/^(?=.)/gm, `[${name}] `));
  };
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', take('out'));
  child.stderr?.on('data', take('err'));

  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolveExit) => {
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      exitInfo ??= { code, signal };
      resolveExit(exitInfo);
    };
    child.once('error', () => {
      if (child.pid === undefined) done(null, null);
    });
    child.once('close', done);
    child.once('exit', (code, signal) => setTimeout(() => done(code, signal), 2_000).unref());
  });
  const pid = child.pid ?? -1;
  const pidFile = trackPid(pid);
  void exited.then(() => {
    if (pidFile) rmSync(pidFile, { force: true });
  });

  return {
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
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        for (const line of all.split('\n')) {
          if (typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line)) return line;
        }
        if (exitInfo)
          throw new Error(
            `${name} exited (${describeExit(exitInfo)}) before printing ${String(pattern)}:\n${tail(all)}`,
          );
        if (Date.now() >= deadline)
          throw new Error(`${name} did not print ${String(pattern)} within ${timeoutMs} ms:\n${tail(all)}`);
        await Promise.race([sleep(wopts.intervalMs ?? 50), exited]);
      }
    },
    async kill(signal = 'SIGTERM', kopts = {}) {
      if (exitInfo) return exitInfo;
      child.kill(signal);
      const first = await Promise.race([exited, sleep(kopts.timeoutMs ?? 10_000).then(() => undefined)]);
      if (first) return first;
      child.kill('SIGKILL');
      const second = await Promise.race([exited, sleep(5_000).then(() => undefined)]);
      if (!second) throw new Error(`${name} (pid ${pid}) survived SIGKILL for 5 s`);
      return second;
    },
  };
}

/**
 * Conformance: the SQLite persistence passes aedes-persistence's own abstract suite
 * (node_modules/aedes-persistence/abstract.js), unmodified. The suite uses node:test, so it runs in
 * a child `node --import tsx` process (fixtures/abstract-runner.ts) with the TAP reporter; this
 * test fails on any failing, cancelled or missing abstract test and reports the count.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const runner = fileURLToPath(new URL('./fixtures/abstract-runner.ts', import.meta.url));

function run(
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function tapCount(tap: string, name: string): number {
  const m = new RegExp(`^# ${name} (\\d+)$`, 'm').exec(tap);
  if (m === null) throw new Error(`no "# ${name}" line in the TAP output`);
  return Number(m[1]);
}

describe('aedes-persistence abstract suite', () => {
  it('passes every test of the installed abstract.js against the SQLite persistence', async () => {
    // How many tests the installed suite declares, so that a suite that silently ran fewer fails.
    const require = createRequire(import.meta.url);
    const source = readFileSync(require.resolve('aedes-persistence/abstract.js'), 'utf8');
    const declared = source.match(/^ {2}test\(/gm)?.length ?? 0;
    expect(declared).toBeGreaterThan(40);

    const { code, stdout, stderr } = await run(['--import', 'tsx', '--test-reporter=tap', runner], 120_000);
    const failed = stdout.split('\n').filter((l) => /^not ok /.test(l));
    const summary = {
      tests: tapCount(stdout, 'tests'),
      pass: tapCount(stdout, 'pass'),
      fail: tapCount(stdout, 'fail'),
      cancelled: tapCount(stdout, 'cancelled'),
      skipped: tapCount(stdout, 'skipped'),
      todo: tapCount(stdout, 'todo'),
    };
    console.info(
      `aedes-persistence abstract suite: ${summary.pass}/${summary.tests} passed (declared ${declared})`,
    );
    expect(failed, stderr).toEqual([]);
    expect(summary).toEqual({ tests: declared, pass: declared, fail: 0, cancelled: 0, skipped: 0, todo: 0 });
    expect(code).toBe(0);
  });
});

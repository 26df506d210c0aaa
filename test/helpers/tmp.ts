/**
 * Scratch directories and automatic cleanup.
 *
 * `tmpDir()` made inside a test (or its beforeEach) is removed when that test finishes. One made at
 * file level or in beforeAll lives until `cleanupTmpDirs()` (call it in afterAll) or, at the
 * latest, the end of the run: every tmpDir is below the run's scratch root, which the globalSetup
 * teardown deletes. Paths stay short (unix socket paths are limited to ~107 bytes).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';
import { ENV } from './env.js';

const fileLevel = new Set<string>();

/** The run's scratch root (made by globalSetup), or the OS temp dir outside a vitest run. */
export function scratchRoot(): string {
  const root = process.env[ENV.tmpRoot];
  if (root) {
    mkdirSync(root, { recursive: true });
    return root;
  }
  return tmpdir();
}

/**
 * Registers `fn` to run when the current test finishes. Returns false (and does nothing) when
 * called outside a running test, e.g. at file level or in beforeAll.
 */
export function onCurrentTestFinished(fn: () => unknown): boolean {
  try {
    onTestFinished(async () => {
      await fn();
    });
    return true;
  } catch {
    return false;
  }
}

/** A new empty directory, e.g. `/tmp/outpost-test-AbC123/db-XyZ789`. */
export function tmpDir(prefix = 'tmp'): string {
  const dir = mkdtempSync(join(scratchRoot(), `${prefix}-`));
  const remove = (): void => {
    fileLevel.delete(dir);
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  };
  if (!onCurrentTestFinished(remove)) fileLevel.add(dir);
  return dir;
}

/** Removes the tmpDirs made outside a test (call in afterAll). */
export function cleanupTmpDirs(): void {
  for (const dir of fileLevel) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  fileLevel.clear();
}

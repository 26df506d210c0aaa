/**
 * The one place `outpost certs` runs the system `openssl` CLI: `execFile` (no shell, so no quoting or
 * injection), a bounded run time, and a failure surfaced as a typed `CertsError('openssl')` carrying
 * openssl's own message. X.509 work (requests, signing, revocation, CRLs) goes through openssl's `req`
 * and `ca` commands with our generated config; key pairs are generated in-process by node:crypto so
 * that private keys are created 0600 from the first byte.
 */
import { execFile } from 'node:child_process';
import { CertsError } from './errors.js';

export interface OpensslOptions {
  /** Sets OPENSSL_CONF, so the system openssl.cnf never leaks extensions into our certificates. */
  readonly config?: string;
  readonly timeoutMs?: number;
}

export interface OpensslResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Binary name; `OUTPOST_OPENSSL` may point at another build (e.g. OpenSSL 3.4 for `-not_after`). */
function binary(): string {
  return process.env['OUTPOST_OPENSSL'] || 'openssl';
}

export function openssl(args: readonly string[], opts: OpensslOptions = {}): Promise<OpensslResult> {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
  if (opts.config) env['OPENSSL_CONF'] = opts.config;
  return new Promise((resolve, reject) => {
    execFile(
      binary(),
      [...args],
      { env, timeout: opts.timeoutMs ?? 30_000, maxBuffer: 4 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const first = args[0] ?? '';
          const detail = (stderr || err.message).trim().split('\n').slice(0, 6).join(' | ');
          reject(new CertsError('openssl', `openssl ${first} failed: ${detail}`));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** `openssl version`, e.g. "OpenSSL 3.0.19 27 Jan 2026". */
export async function opensslVersion(): Promise<string> {
  return (await openssl(['version'])).stdout.trim();
}

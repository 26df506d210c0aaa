/**
 * When a stack command may run ([MW-4], [MW-5]): the agent enforces the maintenance window carried
 * inside the signed command and the stack's update lock, so both hold while the site is offline.
 *
 * - Window: judged by trusted time ([TIME-1]) in the window's IANA time zone. Closed: deferred
 *   `maintenance-window`, looked at again at the computed next opening, and at least every
 *   `recheckMs` (a clock that jumps must not leave a command waiting for a stale instant).
 * - Update lock: the stack is locked while `<locksDir>/<stack>/updates.lock` exists (containers see
 *   the folder at `/run/outpost`). Locked: deferred `update-lock`, polled every `lockPollMs`.
 * - `force: true` skips both checks (emergency).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Command, describeMaintenance, isWindowOpen, nextOpening } from '../../../protocol/src/index.js';

export const LOCK_FILE = 'updates.lock';
/** Where the stack's lock folder appears inside its containers. */
export const LOCK_MOUNT = '/run/outpost';

export interface Deferral {
  readonly rc: 'maintenance-window' | 'update-lock';
  readonly msg: string;
  /** Look again after this long (ms, ≥ 1). */
  readonly retryMs: number;
}

export interface DeferralOptions {
  /** Folder of per-stack lock folders (`<locksDir>/<stack>/updates.lock`). */
  readonly locksDir: string;
  readonly lockPollMs: number;
  /** Longest wait before a closed window is judged again. */
  readonly recheckMs: number;
}

/** The stack's lock folder on the host (bind-mounted at LOCK_MOUNT by the Docker runtime). */
export function lockDir(locksDir: string, stack: string): string {
  return join(locksDir, stack);
}

export class DeferralGate {
  constructor(
    private readonly opts: DeferralOptions,
    /** Trusted time, ms ([TIME-1]). */
    private readonly nowMs: () => number,
  ) {}

  /** Why `cmd` must wait now, or undefined when it may run. Only stack commands are gated. */
  check(cmd: Command): Deferral | undefined {
    if (cmd.type !== 'stack.apply' && cmd.type !== 'stack.remove' && cmd.type !== 'stack.restart')
      return undefined;
    const body = cmd.body;
    if (body.force === true) return undefined;
    if (body.mw) {
      const now = this.nowMs();
      if (!isWindowOpen(body.mw, now)) {
        const next = nextOpening(body.mw, now);
        const until = next === undefined ? 'no opening found' : `opens ${new Date(next).toISOString()}`;
        return {
          rc: 'maintenance-window',
          msg: `window closed (${describeMaintenance(body.mw)}); ${until}`.slice(0, 256),
          retryMs: Math.max(
            1,
            Math.min(next === undefined ? this.opts.recheckMs : next - now, this.opts.recheckMs),
          ),
        };
      }
    }
    if (this.locked(body.stack)) {
      return {
        rc: 'update-lock',
        msg: `update lock held (${LOCK_MOUNT}/${LOCK_FILE})`,
        retryMs: Math.max(1, this.opts.lockPollMs),
      };
    }
    return undefined;
  }

  locked(stack: string): boolean {
    return existsSync(join(lockDir(this.opts.locksDir, stack), LOCK_FILE));
  }
}

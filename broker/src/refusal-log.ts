/**
 * Logging of refusals without letting a flood (a connection storm, a misbehaving client) flood the
 * log: at most `burst` warnings per reason per window; the rest are summarised when the window turns.
 * Metrics are never sampled: every refusal is counted by the caller.
 */
import type { Logger } from 'pino';
import type { RejectReason } from './reasons.js';

/** At most `burst` warnings per reason per window; the rest are counted and summarised. */
export class RefusalLog {
  readonly #seen = new Map<string, { start: number; n: number; suppressed: number }>();
  constructor(
    private readonly log: Logger,
    private readonly burst = 20,
    private readonly windowMs = 10_000,
  ) {}

  warn(reason: RejectReason, fields: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    let s = this.#seen.get(reason);
    if (!s || now - s.start > this.windowMs) {
      if (s && s.suppressed > 0)
        this.log.warn({ reason, suppressed: s.suppressed }, 'refusals not logged individually');
      s = { start: now, n: 0, suppressed: 0 };
      this.#seen.set(reason, s);
    }
    if (s.n++ < this.burst) this.log.warn({ reason, ...fields }, msg);
    else s.suppressed++;
  }
}

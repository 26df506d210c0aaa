/**
 * Crash-loop guard for the reconciler: a service it starts again and again is started at growing
 * intervals (1 s doubling to 5 min), reset once a start has held for `resetAfterMs`. The engine's
 * own restart policy has the same kind of backoff; this one covers what the reconciler starts itself
 * (`on-failure` after its retries, containers stopped by hand). Entries are per stack/service only.
 */
export class StartBackoff {
  private readonly entries = new Map<string, { last: number; delay: number }>();

  constructor(
    private readonly baseMs = 1000,
    private readonly maxMs = 300_000,
    private readonly resetAfterMs = 60_000,
  ) {}

  /** When the service may be started again (≤ now: now). Records the start when allowed. */
  take(key: string, now: number): { allowed: boolean; retryAt: number } {
    const e = this.entries.get(key);
    if (!e || now - e.last >= this.resetAfterMs) {
      this.entries.set(key, { last: now, delay: this.baseMs });
      return { allowed: true, retryAt: now };
    }
    if (now < e.last + e.delay) return { allowed: false, retryAt: e.last + e.delay };
    this.entries.set(key, { last: now, delay: Math.min(e.delay * 2, this.maxMs) });
    return { allowed: true, retryAt: now };
  }

  forget(prefix: string): void {
    for (const k of this.entries.keys()) if (k.startsWith(prefix)) this.entries.delete(k);
  }
}

/**
 * Connection-rate limiting: a token bucket per source IP and one for the whole broker. A connection
 * costs one token from both; refused connections are closed at accept, before TLS or MQTT work.
 * The per-IP table is bounded (least recently seen evicted), so a spray of source addresses cannot
 * grow memory. Sites behind one NAT share a bucket: size `perIpBurst` for that.
 */

export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    readonly burst: number,
    readonly perSec: number,
    now: number,
  ) {
    this.#tokens = burst;
    this.#last = now;
  }

  #refill(now: number): void {
    const elapsed = Math.max(0, now - this.#last) / 1000;
    this.#tokens = Math.min(this.burst, this.#tokens + elapsed * this.perSec);
    this.#last = now;
  }

  /** Takes one token if there is one. */
  take(now: number): boolean {
    this.#refill(now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Gives back a token taken by a connection that another limit then refused. */
  giveBack(): void {
    this.#tokens = Math.min(this.burst, this.#tokens + 1);
  }

  /** True when the bucket is full at `now` (nothing to remember about this source). */
  full(now: number): boolean {
    this.#refill(now);
    return this.#tokens >= this.burst;
  }
}

export interface RateLimitOptions {
  readonly perIpBurst: number;
  readonly perIpPerSec: number;
  readonly globalBurst: number;
  readonly globalPerSec: number;
  readonly maxTrackedIps: number;
}

export type RateDecision = 'ok' | 'per-ip' | 'global';

export class ConnectionRateLimiter {
  readonly #opts: RateLimitOptions;
  readonly #now: () => number;
  readonly #global: TokenBucket;
  readonly #perIp = new Map<string, TokenBucket>();

  constructor(opts: RateLimitOptions, now: () => number = Date.now) {
    this.#opts = opts;
    this.#now = now;
    this.#global = new TokenBucket(opts.globalBurst, opts.globalPerSec, now());
  }

  get trackedIps(): number {
    return this.#perIp.size;
  }

  allow(ip: string): RateDecision {
    const now = this.#now();
    let bucket = this.#perIp.get(ip);
    if (bucket) {
      this.#perIp.delete(ip); // re-insert: Map order is recency order
    } else {
      bucket = new TokenBucket(this.#opts.perIpBurst, this.#opts.perIpPerSec, now);
      if (this.#perIp.size >= this.#opts.maxTrackedIps) this.#evict(now);
    }
    this.#perIp.set(ip, bucket);
    if (!bucket.take(now)) return 'per-ip';
    if (!this.#global.take(now)) {
      bucket.giveBack();
      return 'global';
    }
    return 'ok';
  }

  /** Drops full buckets (they carry no state); failing that, the least recently seen one. */
  #evict(now: number): void {
    let dropped = 0;
    for (const [ip, b] of this.#perIp) {
      if (b.full(now)) {
        this.#perIp.delete(ip);
        if (++dropped >= 64) break;
      }
    }
    if (dropped === 0) {
      const oldest = this.#perIp.keys().next();
      if (!oldest.done) this.#perIp.delete(oldest.value);
    }
  }
}

import { describe, expect, it } from 'vitest';
import { type Clock, systemClock, TrustedTime } from '../../protocol/src/index.js';

function manualClock(ms: number): Clock & { set(ms: number): void } {
  let t = ms;
  return { now: () => t, set: (v) => (t = v) };
}

describe('TrustedTime [TIME-1] I6', () => {
  it('follows the local clock in whole seconds when no signed time is known', () => {
    const c = manualClock(1_767_225_600_999);
    expect(new TrustedTime(c).nowSec()).toBe(1_767_225_600);
  });

  it('never goes backwards when the clock does', () => {
    const c = manualClock(2_000_000_000_000);
    const t = new TrustedTime(c);
    const seen: number[] = [];
    for (const ms of [2_000_000_000_000, 1_000, 2_000_000_500_000, 5_000_000, 1_999_999_999_000]) {
      c.set(ms);
      t.observe(Math.floor(ms / 1000));
      seen.push(t.nowSec());
    }
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThanOrEqual(seen[i - 1]!);
  });

  it('a device reset to 1970 judges time by the latest signed issued-at', () => {
    const c = manualClock(0);
    const t = new TrustedTime(c);
    expect(t.nowSec()).toBe(0);
    expect(t.observe(1_767_225_600)).toBe(true);
    expect(t.nowSec()).toBe(1_767_225_600);
    c.set(30_000); // the clock runs from 1970 again
    expect(t.nowSec()).toBe(1_767_225_600);
  });

  it('observe only raises the floor', () => {
    const t = new TrustedTime(manualClock(0), 100);
    expect(t.floor).toBe(100);
    expect(t.observe(50)).toBe(false);
    expect(t.observe(100)).toBe(false);
    expect(t.floor).toBe(100);
    expect(t.observe(101)).toBe(true);
    expect(t.floor).toBe(101);
  });

  it('starts from a persisted floor and follows a clock that is ahead of it', () => {
    const c = manualClock(0);
    const t = new TrustedTime(c, 1_000);
    expect(t.nowSec()).toBe(1_000);
    c.set(5_000_000);
    expect(t.nowSec()).toBe(5_000);
    expect(t.floor).toBe(1_000);
  });

  it('the system clock is the default', () => {
    const before = Math.floor(Date.now() / 1000);
    const n = new TrustedTime().nowSec();
    expect(n).toBeGreaterThanOrEqual(before);
    expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(1000);
  });
});

/**
 * Trusted time (SPEC [TIME-1], I6): non-decreasing, the maximum of the local clock and the latest
 * signed issued-at seen. A device whose clock resets to 1970 after a power loss still judges expiry
 * correctly once it has seen one signed message; the value is persisted by its owner (the agent).
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export class TrustedTime {
  private floorSec: number;

  constructor(
    private readonly clock: Clock = systemClock,
    persistedFloorSec = 0,
  ) {
    this.floorSec = persistedFloorSec;
  }

  /** Trusted time in whole seconds. */
  nowSec(): number {
    return Math.max(Math.floor(this.clock.now() / 1000), this.floorSec);
  }

  /** Raises the floor to a verified issued-at. Returns true if the floor moved. */
  observe(signedIatSec: number): boolean {
    if (signedIatSec > this.floorSec) {
      this.floorSec = signedIatSec;
      return true;
    }
    return false;
  }

  /** The floor to persist. */
  get floor(): number {
    return this.floorSec;
  }
}

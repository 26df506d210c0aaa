/**
 * Disk-full guard (I5): below `minFreeBytes` free in the data folder (or after SQLITE_FULL) the agent
 * stops accepting commands — no PUBACK, so the broker keeps them — raises `disk-full` (in memory: the
 * database may not take it), polls the free space, and when it is back clears the alarm and calls
 * `onResume` (the transport reconnects so the broker redelivers what was withheld).
 */
import type { Logger } from 'pino';
import type { Alarms } from './alarms.js';

export class DiskGuard {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly free: () => number,
    private readonly minFreeBytes: number,
    private readonly checkMs: number,
    private readonly alarms: Alarms,
    private readonly onResume: () => void,
    private readonly log: Logger,
  ) {}

  /** True while commands must be withheld. */
  blocked(): boolean {
    if (this.timer) return true;
    if (!this.low()) return false;
    this.enter();
    return true;
  }

  /** Enters the disk-full state (also after SQLITE_FULL). */
  enter(): void {
    this.alarms.raiseInMemory('disk-full', `free space below ${this.minFreeBytes} bytes: commands withheld`);
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.low()) return;
      this.close();
      this.alarms.clearInMemory('disk-full');
      this.log.info('disk space back: resuming');
      this.onResume();
    }, this.checkMs);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private low(): boolean {
    try {
      return this.free() < this.minFreeBytes;
    } catch {
      return false; // cannot tell: SQLITE_FULL still catches the real thing
    }
  }
}

/**
 * Site alarms (persisted in SQLite, listed in every state message and in the SCADA status).
 * `disk-full` is also kept in memory: it must be visible exactly when the database cannot be written.
 */
import type { Logger } from 'pino';
import type { Alarm, AlarmCode, Clock } from '../../../protocol/src/index.js';
import type { AgentStore } from './store.js';

export class Alarms {
  private readonly listeners: (() => void)[] = [];
  private memoryOnly = new Map<string, Alarm>();
  private notifyQueued = false;

  constructor(
    private readonly store: AgentStore,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  private nowSec(): number {
    return Math.floor(this.clock.now() / 1000);
  }

  private changed(): void {
    if (this.notifyQueued) return;
    this.notifyQueued = true;
    // After the surrounding transaction: listeners read committed data.
    setImmediate(() => {
      this.notifyQueued = false;
      for (const fn of this.listeners) fn();
    });
  }

  /** Raises (or refreshes the message of) an alarm. Safe inside a transaction. */
  raise(code: AlarmCode, msg?: string, stack?: string): void {
    const fresh = this.store.raiseAlarm(code, this.nowSec(), msg?.slice(0, 256), stack ?? '');
    if (fresh) this.log.warn({ alarm: code, stack, msg }, 'alarm raised');
    this.changed();
  }

  clear(code: AlarmCode, stack?: string): void {
    if (this.store.clearAlarm(code, stack ?? '')) {
      this.log.info({ alarm: code, stack }, 'alarm cleared');
      this.changed();
    }
  }

  /** An alarm that does not touch the database (disk-full). */
  raiseInMemory(code: AlarmCode, msg?: string): void {
    if (this.memoryOnly.has(code)) return;
    this.memoryOnly.set(code, { code, since: this.nowSec(), ...(msg ? { msg: msg.slice(0, 256) } : {}) });
    this.log.warn({ alarm: code, msg }, 'alarm raised');
    this.changed();
  }

  clearInMemory(code: AlarmCode): void {
    if (this.memoryOnly.delete(code)) {
      this.log.info({ alarm: code }, 'alarm cleared');
      this.changed();
    }
  }

  has(code: AlarmCode, stack?: string): boolean {
    return this.list().some((a) => a.code === code && (stack === undefined || a.stack === stack));
  }

  /** Every active alarm (wire form), at most 64. */
  list(): Alarm[] {
    let rows: Alarm[] = [];
    try {
      rows = this.store.alarms().map((r) => ({
        code: r.code,
        since: r.since,
        ...(r.msg ? { msg: r.msg } : {}),
        ...(r.stack ? { stack: r.stack } : {}),
      }));
    } catch {
      // A database that cannot be read still lets in-memory alarms through.
    }
    const mem = [...this.memoryOnly.values()].filter((m) => !rows.some((r) => r.code === m.code && !r.stack));
    return [...mem, ...rows].slice(0, 64);
  }
}

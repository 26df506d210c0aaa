/**
 * The uplink outbox (I8): acks, state and status wait in SQLite and are drained in order with QoS 1
 * when connected; a row is deleted only when its PUBACK arrives. Capped in bytes:
 *  - acks are never evicted (their number is bounded by the commands the controller has in flight);
 *  - state is coalesced: a full snapshot replaces every pending state message (latest wins); when the
 *    cap forces deltas out, the owner is told (`onStateEvicted`) and enqueues a full snapshot, which
 *    folds the lost deltas in;
 *  - status (retained JSON for SCADA) keeps only its latest row.
 * Every state row removed unsent is a drop: counted (persisted), reported in state `drops`, and a
 * cap-forced eviction raises `outbox-drops` (cleared once the outbox has drained).
 */
import type { Logger } from 'pino';
import type { Clock } from '../../../protocol/src/index.js';
import type { Alarms } from './alarms.js';
import { type AgentStore, META } from './store.js';

export type OutboxKind = 'ack' | 'state' | 'status';

export interface OutboxRow {
  readonly id: number;
  readonly kind: OutboxKind;
  readonly full: number;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly retain: number;
  readonly bytes: number;
  readonly created_at: number;
}

export interface Publisher {
  readonly connected: boolean;
  /** QoS 1; resolves on PUBACK, rejects when the client gives the message up. */
  publish(topic: string, payload: Uint8Array, opts: { retain: boolean }): Promise<void>;
}

export interface OutboxOptions {
  readonly maxBytes: number;
  /** Messages handed to MQTT at once (unacknowledged). */
  readonly window?: number;
}

export interface OutboxStats {
  readonly rows: number;
  readonly bytes: number;
  readonly acks: number;
  readonly states: number;
  readonly drops: number;
}

export class Outbox {
  private readonly inflight = new Set<number>();
  private publisher: Publisher | undefined;
  private pumpQueued = false;
  private closed = false;
  private readonly q;
  /** Called (after the transaction) when state deltas were evicted: enqueue a full snapshot. */
  onStateEvicted: () => void = () => {};
  /** Called when a row was acknowledged by the broker. */
  onSent: (row: Pick<OutboxRow, 'id' | 'kind'>) => void = () => {};

  constructor(
    private readonly store: AgentStore,
    private readonly alarms: Alarms,
    private readonly opts: OutboxOptions,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {
    const db = store.db;
    this.q = {
      insert: db.prepare(
        `INSERT INTO outbox (kind, full, topic, payload, retain, bytes, created_at)
         VALUES (@kind, @full, @topic, @payload, @retain, @bytes, @created_at)`,
      ),
      head: db.prepare<[number], OutboxRow>('SELECT * FROM outbox ORDER BY id LIMIT ?'),
      del: db.prepare<[number]>('DELETE FROM outbox WHERE id = ?'),
      total: db.prepare<[], { n: number; b: number | null }>(
        'SELECT COUNT(*) AS n, SUM(bytes) AS b FROM outbox',
      ),
      byKind: db.prepare<[], { kind: OutboxKind; n: number }>(
        'SELECT kind, COUNT(*) AS n FROM outbox GROUP BY kind',
      ),
      ofKind: db.prepare<[string], { id: number; full: number; bytes: number }>(
        'SELECT id, full, bytes FROM outbox WHERE kind = ? ORDER BY id',
      ),
    };
  }

  /** Starts draining through `publisher` (call `kick()` on connect). */
  attach(publisher: Publisher): void {
    this.publisher = publisher;
  }

  // ---- enqueue (inside the caller's transaction) ------------------------------------------------

  addAck(topic: string, payload: Uint8Array): void {
    this.insert('ack', topic, payload, false, false);
    this.enforceCap();
  }

  addState(topic: string, payload: Uint8Array, full: boolean): void {
    if (full) {
      const dropped = this.deleteKind('state');
      if (dropped > 0) this.addDrops(dropped);
    }
    this.insert('state', topic, payload, full, false);
    this.enforceCap();
  }

  addStatus(topic: string, payload: Uint8Array): void {
    this.deleteKind('status');
    this.insert('status', topic, payload, false, true);
  }

  // ---- draining ---------------------------------------------------------------------------------

  /** Schedules a drain pass (after the current transaction). */
  kick(): void {
    if (this.pumpQueued || this.closed) return;
    this.pumpQueued = true;
    setImmediate(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  private pump(): void {
    const pub = this.publisher;
    if (!pub?.connected || this.closed) return;
    const window = this.opts.window ?? 8;
    if (this.inflight.size >= window) return;
    let rows: OutboxRow[];
    try {
      rows = this.q.head.all(window + this.inflight.size).filter((r) => !this.inflight.has(r.id));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'outbox read failed');
      return;
    }
    for (const row of rows.slice(0, window - this.inflight.size)) {
      this.inflight.add(row.id);
      pub.publish(row.topic, row.payload, { retain: row.retain === 1 }).then(
        () => {
          this.inflight.delete(row.id);
          try {
            this.q.del.run(row.id);
          } catch (err) {
            // Sent twice at worst after a restart; the receiver dedupes by useq.
            this.log.warn({ err: (err as Error).message, id: row.id }, 'outbox delete failed');
          }
          this.onSent(row);
          if (this.stats().rows === 0) this.alarms.clear('outbox-drops');
          this.kick();
        },
        (err: unknown) => {
          this.inflight.delete(row.id);
          this.log.debug(
            { err: (err as Error).message, id: row.id },
            'outbox publish not acknowledged; will retry',
          );
        },
      );
    }
  }

  /** Rows are redelivered on the next connection when the client dropped them. */
  close(): void {
    this.closed = true;
  }

  // ---- accounting -------------------------------------------------------------------------------

  stats(): OutboxStats {
    const t = this.q.total.get();
    const kinds = Object.fromEntries(this.q.byKind.all().map((r) => [r.kind, r.n]));
    return {
      rows: t?.n ?? 0,
      bytes: t?.b ?? 0,
      acks: kinds['ack'] ?? 0,
      states: kinds['state'] ?? 0,
      drops: this.drops(),
    };
  }

  drops(): number {
    return this.store.metaInt(META.drops);
  }

  /** Pending rows, oldest first (for tests and `agent status`). */
  peek(limit = 1000): OutboxRow[] {
    return this.q.head.all(limit);
  }

  private insert(kind: OutboxKind, topic: string, payload: Uint8Array, full: boolean, retain: boolean): void {
    this.q.insert.run({
      kind,
      full: full ? 1 : 0,
      topic,
      payload,
      retain: retain ? 1 : 0,
      bytes: payload.length + topic.length,
      created_at: this.clock.now(),
    });
  }

  /** Deletes pending (not in-flight) rows of a kind; returns how many. */
  private deleteKind(kind: OutboxKind): number {
    let n = 0;
    for (const r of this.q.ofKind.all(kind)) {
      if (this.inflight.has(r.id)) continue;
      this.q.del.run(r.id);
      n++;
    }
    return n;
  }

  private addDrops(n: number): void {
    this.store.setMeta(META.drops, this.drops() + n);
  }

  private enforceCap(): void {
    let total = this.q.total.get()?.b ?? 0;
    if (total <= this.opts.maxBytes) return;
    const states = this.q.ofKind.all('state');
    const newest = states.at(-1);
    let evicted = 0;
    for (const r of states) {
      if (total <= this.opts.maxBytes) break;
      // The newest full snapshot is the one state message that is never evicted.
      if (r === newest && r.full === 1) break;
      if (this.inflight.has(r.id)) continue;
      this.q.del.run(r.id);
      total -= r.bytes;
      evicted++;
    }
    if (evicted > 0) {
      this.addDrops(evicted);
      this.alarms.raise(
        'outbox-drops',
        `${this.drops()} state messages dropped (outbox cap ${this.opts.maxBytes} bytes)`,
      );
      this.log.warn({ evicted, total, cap: this.opts.maxBytes }, 'outbox over cap: state evicted');
      setImmediate(() => this.onStateEvicted());
    }
  }
}

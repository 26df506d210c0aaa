/**
 * All writes go through one `Writer`: one IMMEDIATE transaction per persistence call (or per
 * batch), committed before the call's promise settles. Each transaction says whether an
 * acknowledgement depends on it:
 *
 * - durable (`synchronous=FULL`): the commit is fsynced before returning. Used for everything a
 *   PUBACK, PUBREC, PUBCOMP or SUBACK depends on: enqueues, subscriptions, retained, wills,
 *   inbound QoS 2 state (I5).
 * - relaxed (`synchronous=NORMAL`): committed (it survives kill -9, which only loses the process)
 *   but fsynced with the next durable commit or checkpoint. Used where losing the write to a power
 *   cut only repeats work: clearing an acknowledged delivery (redelivered, at-least-once; the agent
 *   dedupes, I2), recording a packet identifier, session timestamps.
 *
 * In WAL mode a later FULL commit fsyncs the log up to itself, so durable writes never overtake
 * relaxed ones. Switching costs one pragma (~7 µs) and happens only when the class changes.
 */
import type Database from 'better-sqlite3';

export class Writer {
  readonly #db: Database.Database;
  readonly #tx: Database.Transaction<(fn: () => unknown) => unknown>;
  readonly #onRollback: Array<() => void> = [];
  #full = true;
  #after: Array<() => void> | undefined;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#tx = db.transaction((fn: () => unknown) => fn());
  }

  /** Registers a callback run after any failed transaction (to resynchronise in-memory state). */
  onRollback(fn: () => void): void {
    this.#onRollback.push(fn);
  }

  /** Runs `fn` in one transaction. A nested call joins the outer transaction. */
  run<T>(durable: boolean, fn: () => T): T {
    if (this.#after !== undefined) {
      if (durable && !this.#full) throw new Error('a durable write cannot join a relaxed transaction');
      return fn();
    }
    if (durable !== this.#full) {
      this.#db.pragma(durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
      this.#full = durable;
    }
    const after: Array<() => void> = [];
    this.#after = after;
    let result: T;
    try {
      result = this.#tx.immediate(fn) as T;
    } catch (err) {
      this.#after = undefined;
      for (const resync of this.#onRollback) resync();
      throw err;
    }
    this.#after = undefined;
    for (const f of after) f();
    return result;
  }

  /** Runs `fn` once the current transaction has committed (immediately outside one). */
  afterCommit(fn: () => void): void {
    if (this.#after === undefined) fn();
    else this.#after.push(fn);
  }
}

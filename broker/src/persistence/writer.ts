/**
 * Every database operation of the persistence goes through one `Writer`, which runs them in
 * submission order and group-commits them: the operations submitted during one turn of the event
 * loop run in a single IMMEDIATE transaction at the end of it (each in its own SAVEPOINT, so one
 * failing operation does not undo the others), and each operation's promise settles only after
 * that transaction has committed. A burst of publishes (aedes handles a whole socket read at once)
 * thus costs one fsync instead of one per message, and nothing is acknowledged before it is on disk.
 *
 * Each operation says whether an acknowledgement depends on it:
 *
 * - durable (`synchronous=FULL`): the commit is fsynced before the promise settles. Used for
 *   everything a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK depends on: enqueues, subscriptions,
 *   retained messages, wills, inbound QoS 2 state (I5).
 * - relaxed (`synchronous=NORMAL`): committed (it survives kill -9, which only loses the process)
 *   but fsynced with the next durable commit or checkpoint. Used where losing the write to a power
 *   cut only repeats work: clearing an acknowledged delivery (redelivered, at-least-once; the agent
 *   dedupes, I2), recording a packet identifier, session timestamps.
 *
 * A batch is durable if any of its operations is. In WAL mode a later FULL commit fsyncs the log
 * up to itself, so durable writes never overtake relaxed ones.
 */
import type Database from 'better-sqlite3';

/** Operations per transaction at most; a longer queue is committed in several. */
const MAX_BATCH = 512;

/** Error code of an operation submitted after `close`. */
export const ERR_CLOSED = 'ERR_PERSISTENCE_CLOSED';

interface Job {
  durable: boolean;
  op: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

type Outcome = { ok: true; value: unknown; after: Array<() => void> } | { ok: false; error: unknown };

/** An error an operation throws without having written anything (no resynchronisation needed). */
export function expectedError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code, expected: true });
}

function isExpected(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { expected?: unknown }).expected === true;
}

export class Writer {
  readonly #db: Database.Database;
  readonly #outer: Database.Transaction<(jobs: Job[], outcomes: Outcome[]) => void>;
  readonly #savepoint: Database.Transaction<(op: () => unknown) => unknown>;
  readonly #onResync: Array<() => void> = [];
  #queue: Job[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #full = true;
  #after: Array<() => void> | undefined;
  #closed = false;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#savepoint = db.transaction((op: () => unknown) => op());
    this.#outer = db.transaction((jobs: Job[], outcomes: Outcome[]) => {
      for (const job of jobs) {
        const after: Array<() => void> = [];
        this.#after = after;
        try {
          outcomes.push({ ok: true, value: this.#savepoint(job.op), after });
        } catch (error) {
          outcomes.push({ ok: false, error });
        }
      }
      this.#after = undefined;
    });
  }

  /**
   * Registers a callback that rebuilds in-memory state from the database; run after a failed
   * commit or a failed operation (whose partial in-memory changes cannot be trusted).
   */
  onResync(fn: () => void): void {
    this.#onResync.push(fn);
  }

  /** Queues `op` for the next group commit; resolves with its result once committed. */
  submit<T>(durable: boolean, op: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(expectedError('the broker persistence is closed', ERR_CLOSED));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ durable, op, resolve: resolve as (value: unknown) => void, reject });
      if (this.#queue.length >= MAX_BATCH) this.flush();
      else this.#scheduled ??= setImmediate(() => this.flush());
    });
  }

  /**
   * Commits what is queued, then runs `op` in a transaction of its own, now, and returns its
   * result (for synchronous maintenance calls such as session expiry).
   */
  runSync<T>(durable: boolean, op: () => T): T {
    if (this.#closed) throw expectedError('the broker persistence is closed', ERR_CLOSED);
    this.flush();
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    this.#commit([
      {
        durable,
        op,
        resolve: (value) => {
          outcome = { ok: true, value: value as T };
        },
        reject: (error) => {
          outcome = { ok: false, error };
        },
      },
    ]);
    if (outcome === undefined) throw new Error('operation did not run');
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** Commits everything queued now (before a snapshot read, or on close). */
  flush(): void {
    if (this.#scheduled !== undefined) {
      clearImmediate(this.#scheduled);
      this.#scheduled = undefined;
    }
    while (this.#queue.length > 0) {
      const jobs = this.#queue.splice(0, MAX_BATCH);
      this.#commit(jobs);
    }
  }

  #commit(jobs: Job[]): void {
    const durable = jobs.some((j) => j.durable);
    const outcomes: Outcome[] = [];
    try {
      if (durable !== this.#full) {
        this.#db.pragma(durable ? 'synchronous = FULL' : 'synchronous = NORMAL');
        this.#full = durable;
      }
      this.#outer.immediate(jobs, outcomes);
    } catch (err) {
      this.#after = undefined;
      this.#resync();
      for (const job of jobs) job.reject(err);
      return;
    }
    if (outcomes.some((o) => !o.ok && !isExpected(o.error))) this.#resync();
    jobs.forEach((job, i) => {
      const outcome = outcomes[i];
      if (outcome === undefined) job.reject(new Error('operation did not run'));
      else if (outcome.ok) {
        for (const f of outcome.after) f();
        job.resolve(outcome.value);
      } else job.reject(outcome.error);
    });
  }

  #resync(): void {
    for (const fn of this.#onResync) fn();
  }

  /** Runs `fn` after the current operation's transaction has committed (at once outside one). */
  afterCommit(fn: () => void): void {
    if (this.#after === undefined) fn();
    else this.#after.push(fn);
  }

  /** Commits what is queued and refuses further operations. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}

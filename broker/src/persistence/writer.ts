/**
 * Every database operation of the persistence goes through one `Writer`, which runs them in
 * submission order and group-commits them: the operations submitted during one turn of the event
 * loop run as one batch at the end of it, in a single IMMEDIATE transaction. A batch runs without
 * per-operation savepoints; only if an operation throws an unexpected error is the batch rolled
 * back and replayed operation by operation, each in its own SAVEPOINT, so one failing operation
 * still does not undo the others. A burst of publishes (aedes handles a whole socket read at once)
 * thus costs one fsync instead of one per message, and nothing durable is acknowledged before it
 * is on disk.
 *
 * Each operation says whether an acknowledgement depends on it:
 *
 * - durable: the commit is fsynced before the promise settles (synchronous=FULL, or with a WalSync
 *   as below). Used for
 *   everything a PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK depends on: enqueues, subscriptions,
 *   retained messages, wills, inbound QoS 2 state (I5).
 * - relaxed (`synchronous=NORMAL`): committed (it survives kill -9, which only loses the process)
 *   but fsynced with the next durable commit or checkpoint. Used where losing the write to a power
 *   cut only repeats work: clearing an acknowledged delivery (redelivered, at-least-once; the agent
 *   dedupes, I2), recording a packet identifier, session timestamps.
 *
 * A batch is durable if any of its operations is; its transaction commits at the end of the turn
 * and its promises settle after that commit. A relaxed-only batch does not commit every turn: it
 * runs in a transaction that stays open (its promises settle once it has run, seeing its own
 * writes) and is committed, with synchronous=NORMAL, before the next durable batch or after
 * RELAXED_COMMIT_MS, whichever comes first, or on `close`. That only widens the window in which a
 * crash loses a relaxed write (kill -9 within RELAXED_COMMIT_MS now loses it too), and such a loss
 * only repeats work. The connection sees its own uncommitted writes, so reads are unaffected;
 * other connections see relaxed writes once committed. In WAL mode a later FULL commit fsyncs the
 * log up to itself, so durable writes never overtake relaxed ones.
 *
 * With a `WalSync` (wal-sync.ts; what the persistence uses for a file database) durable batches
 * commit with synchronous=NORMAL too, and their promises settle once an fdatasync of the WAL that
 * began after their commit has returned; the sync runs on the libuv pool, so the event loop is not
 * blocked, and batches committed meanwhile share the next sync. Same durability as FULL (which is
 * NORMAL plus that sync after each commit), fewer and non-blocking syncs. A failed sync rejects the
 * promises of the batches it covered (their writes are committed, but not known to be on disk).
 */
import type Database from 'better-sqlite3';
import type { WalSync } from './wal-sync.js';

/** Operations per transaction at most; a longer queue is committed in several. */
const MAX_BATCH = 512;

/** How long a relaxed-only transaction may stay open before it is committed. */
export const RELAXED_COMMIT_MS = 20;

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

/** A statement prepared once and run without bindings. */
type Stmt = { run: () => unknown };

export class Writer {
  readonly #db: Database.Database;
  readonly #onResync: Array<() => void> = [];
  readonly #begin: Stmt;
  readonly #commitTx: Stmt;
  readonly #rollbackTx: Stmt;
  readonly #batchSavepoint: Stmt;
  readonly #batchRelease: Stmt;
  readonly #batchRollback: Stmt;
  readonly #opSavepoint: Stmt;
  readonly #opRelease: Stmt;
  readonly #opRollback: Stmt;
  #queue: Job[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  /** The open relaxed-only transaction's commit timer (set while one is open). */
  #relaxedTimer: NodeJS.Timeout | undefined;
  #full = true;
  #after: Array<() => void> | undefined;
  #closed = false;
  readonly #walSync: WalSync | undefined;
  /** Durable batches committed and waiting for the next WAL sync; and those the running one covers. */
  #awaitingSync: Array<(err: Error | null) => void> = [];
  #syncing: Array<(err: Error | null) => void> | undefined;

  constructor(db: Database.Database, walSync?: WalSync) {
    this.#db = db;
    this.#walSync = walSync;
    if (walSync) {
      db.pragma('synchronous = NORMAL');
      this.#full = false;
    }
    this.#begin = db.prepare('BEGIN IMMEDIATE');
    this.#commitTx = db.prepare('COMMIT');
    this.#rollbackTx = db.prepare('ROLLBACK');
    this.#batchSavepoint = db.prepare('SAVEPOINT writer_batch');
    this.#batchRelease = db.prepare('RELEASE writer_batch');
    this.#batchRollback = db.prepare('ROLLBACK TO writer_batch');
    this.#opSavepoint = db.prepare('SAVEPOINT writer_op');
    this.#opRelease = db.prepare('RELEASE writer_op');
    this.#opRollback = db.prepare('ROLLBACK TO writer_op');
  }

  /**
   * Registers a callback that rebuilds in-memory state from the database; run after a failed
   * commit or a failed operation (whose partial in-memory changes cannot be trusted).
   */
  onResync(fn: () => void): void {
    this.#onResync.push(fn);
  }

  /** Queues `op` for the next group commit; resolves with its result once committed (see above). */
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
    this.commitRelaxed();
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    this.#run(
      [
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
      ],
      true,
    );
    if (outcome === undefined) throw new Error('operation did not run');
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /**
   * Runs everything queued now (before a snapshot read, or on close). Durable batches are
   * committed; relaxed-only ones may stay in the open transaction (`commitRelaxed` ends it).
   */
  flush(): void {
    if (this.#scheduled !== undefined) {
      clearImmediate(this.#scheduled);
      this.#scheduled = undefined;
    }
    while (this.#queue.length > 0) {
      const jobs = this.#queue.splice(0, MAX_BATCH);
      this.#run(jobs, false);
    }
  }

  /** Commits the open relaxed-only transaction, if any. */
  commitRelaxed(): void {
    if (this.#relaxedTimer === undefined) return;
    clearTimeout(this.#relaxedTimer);
    this.#relaxedTimer = undefined;
    try {
      this.#commitTx.run();
    } catch {
      // Its operations have settled already; their writes were losable by definition.
      this.#abandon();
    }
  }

  /** Rolls back whatever transaction is left open after a failure and rebuilds in-memory state. */
  #abandon(): void {
    if (this.#relaxedTimer !== undefined) {
      clearTimeout(this.#relaxedTimer);
      this.#relaxedTimer = undefined;
    }
    this.#after = undefined;
    if (this.#db.inTransaction) {
      try {
        this.#rollbackTx.run();
      } catch {
        // nothing left to undo
      }
    }
    this.#resync();
  }

  #setSync(full: boolean): void {
    if (this.#walSync || full === this.#full) return; // with a WalSync: always NORMAL
    // Not a prepared statement: SQLite applies this pragma when it is prepared, not when run.
    this.#db.pragma(full ? 'synchronous = FULL' : 'synchronous = NORMAL');
    this.#full = full;
  }

  /**
   * Runs one batch. A durable one (or `commitNow`) commits before its promises settle; a
   * relaxed-only one joins or opens the relaxed transaction and settles at once.
   */
  #run(jobs: Job[], commitNow: boolean): void {
    const durable = jobs.some((j) => j.durable);
    const commit = durable || commitNow;
    let outcomes: Outcome[];
    try {
      // A durable commit needs synchronous=FULL, which cannot change inside a transaction: end
      // the relaxed one first (a cheap NORMAL commit; the FULL commit then fsyncs both).
      if (commit) this.commitRelaxed();
      if (this.#relaxedTimer === undefined) {
        this.#setSync(durable);
        this.#begin.run();
      }
      outcomes = this.#runBatch(jobs);
      if (commit) this.#commitTx.run();
      else {
        this.#relaxedTimer ??= setTimeout(() => this.commitRelaxed(), RELAXED_COMMIT_MS);
      }
    } catch (err) {
      this.#abandon();
      for (const job of jobs) job.reject(err);
      return;
    }
    const settle = (syncError: Error | null): void => {
      jobs.forEach((job, i) => {
        const outcome = outcomes[i];
        if (outcome === undefined) job.reject(new Error('operation did not run'));
        else if (outcome.ok) {
          for (const f of outcome.after) f();
          if (syncError) job.reject(syncError);
          else job.resolve(outcome.value);
        } else job.reject(outcome.error);
      });
    };
    if (!this.#walSync || !durable) {
      settle(null);
    } else if (commitNow) {
      settle(this.#syncNow());
    } else {
      this.#awaitingSync.push(settle);
      this.#startSync();
    }
  }

  /** Syncs the WAL now, blocking; returns the error instead of throwing. */
  #syncNow(): Error | null {
    try {
      this.#walSync?.syncNow();
      return null;
    } catch (err) {
      return err as Error;
    }
  }

  /** Starts a WAL sync for the batches waiting for one, unless one is running (it restarts after). */
  #startSync(): void {
    if (this.#syncing !== undefined || this.#awaitingSync.length === 0 || !this.#walSync) return;
    const group = this.#awaitingSync;
    this.#awaitingSync = [];
    this.#syncing = group;
    this.#walSync.sync((err) => {
      if (this.#syncing !== group) return; // close() settled them already
      this.#syncing = undefined;
      for (const settle of group) settle(err);
      this.#startSync();
    });
  }

  /**
   * Runs the operations in a savepoint of the open transaction, without one per operation. An
   * operation that throws an expected error wrote nothing, so the others go on. Any other error
   * rolls the batch back, rebuilds in-memory state, and replays it operation by operation, each in
   * its own savepoint, so only the failing one is undone. Throws if the transaction was lost.
   */
  #runBatch(jobs: Job[]): Outcome[] {
    this.#batchSavepoint.run();
    let outcomes: Outcome[] = [];
    let failed = false;
    try {
      for (const job of jobs) {
        const after: Array<() => void> = [];
        this.#after = after;
        try {
          outcomes.push({ ok: true, value: job.op(), after });
        } catch (error) {
          if (!isExpected(error)) {
            failed = true;
            break;
          }
          outcomes.push({ ok: false, error });
        }
      }
    } finally {
      this.#after = undefined;
    }
    if (!failed) {
      this.#batchRelease.run();
      return outcomes;
    }
    this.#batchRollback.run();
    this.#batchRelease.run();
    this.#resync();
    outcomes = [];
    let unexpected = false;
    try {
      for (const job of jobs) {
        const after: Array<() => void> = [];
        this.#after = after;
        this.#opSavepoint.run();
        try {
          const value = job.op();
          this.#opRelease.run();
          outcomes.push({ ok: true, value, after });
        } catch (error) {
          if (!this.#db.inTransaction) throw error; // SQLite rolled the whole transaction back
          this.#opRollback.run();
          this.#opRelease.run();
          if (!isExpected(error)) unexpected = true;
          outcomes.push({ ok: false, error });
        }
      }
    } finally {
      this.#after = undefined;
    }
    if (unexpected) this.#resync();
    return outcomes;
  }

  #resync(): void {
    for (const fn of this.#onResync) fn();
  }

  /** Runs `fn` after the current operation's batch has run (at once outside one). */
  afterCommit(fn: () => void): void {
    if (this.#after === undefined) fn();
    else this.#after.push(fn);
  }

  /** Commits what is queued, settles what waits for a WAL sync, and refuses further operations. */
  close(): void {
    this.flush();
    this.commitRelaxed();
    this.#closed = true;
    if (!this.#walSync) return;
    const waiting = [...(this.#syncing ?? []), ...this.#awaitingSync];
    this.#syncing = undefined;
    this.#awaitingSync = [];
    if (waiting.length > 0) {
      const err = this.#syncNow();
      for (const settle of waiting) settle(err);
    }
    this.#walSync.close();
  }
}

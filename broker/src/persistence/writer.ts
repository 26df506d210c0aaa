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
 * - durable: its promise settles only once the commit is on disk. Used for everything a PUBACK,
 *   PUBREC, PUBCOMP, SUBACK or UNSUBACK depends on: enqueues, subscriptions, retained messages,
 *   wills, inbound QoS 2 state (I5).
 * - relaxed: committed (it survives kill -9, which only loses the process) but on disk only with
 *   the next durable sync or checkpoint. Used where losing the write to a power cut only repeats
 *   work: clearing an acknowledged delivery (redelivered, at-least-once; the agent dedupes, I2),
 *   recording a packet identifier, session timestamps.
 *
 * How a durable commit reaches the disk (docs/adr/0006-broker-group-commit.md). On a WAL database
 * file every transaction commits with `synchronous=NORMAL` (SQLite writes the WAL frames to the
 * OS, no fsync), and the writer then syncs the WAL file itself with `fdatasync` on the libuv
 * thread pool, off the event loop. Durable batches committed while a sync is running wait for the
 * next one, so one fsync serves every batch committed during the previous one (group commit that
 * widens with the disk's latency); meanwhile the event loop keeps parsing, delivering and
 * committing. A durable promise settles after the sync that began after its COMMIT returned, so
 * it is on disk exactly as with `synchronous=FULL` (which fsyncs the WAL at the end of each
 * commit): checkpoints still sync the WAL before copying it and the database after, and WAL
 * recovery only ever keeps a checksummed prefix of frames, so an unsynced tail can be lost to a
 * power cut but never corrupts what an acknowledgement depended on. Without a WAL file (an
 * in-memory database, or one not in WAL mode) durable batches commit with `synchronous=FULL`.
 *
 * A batch is durable if any of its operations is; its transaction commits at the end of the turn
 * and its promises settle after that commit (and its sync). A relaxed-only batch does not commit
 * every turn: it runs in a transaction that stays open (its promises settle once it has run,
 * seeing its own writes) and is committed before the next durable batch or after
 * RELAXED_COMMIT_MS, whichever comes first, or on `close`. That only widens the window in which a
 * crash loses a relaxed write (kill -9 within RELAXED_COMMIT_MS now loses it too), and such a loss
 * only repeats work. The connection sees its own uncommitted writes, so reads are unaffected;
 * other connections see relaxed writes once committed. The WAL is one sequential log, so a durable
 * sync also covers every relaxed commit before it: durable writes never overtake relaxed ones.
 */
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';

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

/** Settles a committed durable batch once its sync has finished (with the sync's error, if any). */
type Settle = (err: NodeJS.ErrnoException | null) => void;

/**
 * A file descriptor of the database's WAL file, or undefined if durable commits must use
 * `synchronous=FULL` instead (no WAL file: in-memory, or not in WAL mode). The directory is
 * synced once, as SQLite does for a WAL file it creates.
 */
function openWal(db: Database.Database): number | undefined {
  if (db.memory) return undefined;
  if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
  let fd: number | undefined;
  try {
    fd = openSync(`${db.name}-wal`, 'r+');
    const dir = openSync(dirname(db.name), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return fd;
  } catch {
    if (fd !== undefined) closeSync(fd);
    return undefined;
  }
}

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
  /** The WAL file the writer syncs itself (see "How a durable commit reaches the disk"). */
  #walFd: number | undefined;
  /** A WAL sync is running on the thread pool. */
  #syncing = false;
  /** Committed durable batches waiting for the next WAL sync. */
  #unsynced: Settle[] = [];
  #syncs = 0;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#walFd = openWal(db);
    if (this.#walFd !== undefined) {
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

  #setSync(durable: boolean): void {
    const full = durable && this.#walFd === undefined;
    if (full === this.#full) return;
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
    const settle: Settle = (syncError) => {
      jobs.forEach((job, i) => {
        const outcome = outcomes[i];
        if (syncError !== null) job.reject(syncError);
        else if (outcome === undefined) job.reject(new Error('operation did not run'));
        else if (outcome.ok) {
          for (const f of outcome.after) f();
          job.resolve(outcome.value);
        } else job.reject(outcome.error);
      });
    };
    if (durable && this.#walFd !== undefined) {
      if (commitNow) {
        this.#syncNow();
        settle(null);
      } else {
        this.#unsynced.push(settle);
        this.#startSync();
      }
    } else settle(null);
  }

  /**
   * Starts a WAL sync for the batches committed so far unless one is running (then the next one
   * starts when it ends, for everything committed meanwhile).
   */
  #startSync(): void {
    const fd = this.#walFd;
    if (this.#syncing || this.#unsynced.length === 0 || fd === undefined) return;
    const batches = this.#unsynced;
    this.#unsynced = [];
    this.#syncing = true;
    this.#syncs++;
    fdatasync(fd, (err) => {
      this.#syncing = false;
      for (const settle of batches) settle(err);
      if (this.#closed) this.#closeWal();
      else this.#startSync();
    });
  }

  /** Syncs the WAL now, on this thread, and settles every batch waiting for a sync. */
  #syncNow(): void {
    if (this.#walFd === undefined) return;
    this.#syncs++;
    let error: NodeJS.ErrnoException | null = null;
    try {
      fdatasyncSync(this.#walFd);
    } catch (err) {
      error = err as NodeJS.ErrnoException;
    }
    const batches = this.#unsynced;
    this.#unsynced = [];
    for (const settle of batches) settle(error);
    if (error !== null) throw error;
  }

  #closeWal(): void {
    if (this.#walFd === undefined || this.#syncing) return;
    closeSync(this.#walFd);
    this.#walFd = undefined;
  }

  /** WAL syncs run so far (tests, metrics); 0 when commits use synchronous=FULL instead. */
  get walSyncs(): number {
    return this.#syncs;
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

  /** Commits and syncs what is queued and refuses further operations. */
  close(): void {
    this.flush();
    this.commitRelaxed();
    this.#closed = true;
    if (this.#walFd !== undefined) {
      try {
        this.#syncNow();
      } finally {
        this.#closeWal(); // or when the running sync ends
      }
    }
  }
}

/**
 * fdatasync of the database's WAL file, off the event loop.
 *
 * With `synchronous=FULL` SQLite fsyncs the WAL inside every COMMIT, on the event loop: in a
 * reconnect storm of 10,000 sites the broker spent ~30 % of its time there (thousands of small
 * commits, each blocking every socket). `synchronous=NORMAL` does the same writes without that
 * sync; SQLite documents FULL in WAL mode as NORMAL plus a sync of the WAL after each commit. So the
 * writer commits with NORMAL and then asks this class to fdatasync the WAL file on the libuv pool,
 * settling the promises of everything committed before the sync began only when it returns: nothing
 * an acknowledgement depends on is acknowledged before it is on disk (I5), and the event loop keeps
 * serving sockets meanwhile. Batches committed while a sync runs wait for the next one, so one sync
 * covers many commits (group commit).
 *
 * The file is opened lazily and reopened if SQLite replaced it (its link count dropped to 0); fsync
 * applies to the file, not to the descriptor, so our own read-only descriptor is enough.
 */
import { closeSync, fdatasync, fdatasyncSync, fstatSync, openSync } from 'node:fs';

export interface WalSync {
  /** Starts a sync of everything written so far; `done` is called once with its outcome. */
  sync(done: (err: Error | null) => void): void;
  /** The same, blocking (for synchronous callers and for close). */
  syncNow(): void;
  /** Releases the file once no sync is running. */
  close(): void;
}

export class WalFile implements WalSync {
  readonly #path: string;
  #fd: number | undefined;
  #running = 0;
  #closing = false;

  constructor(dbPath: string) {
    this.#path = `${dbPath}-wal`;
  }

  #open(): number {
    if (this.#fd !== undefined && fstatSync(this.#fd).nlink > 0) return this.#fd;
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    this.#fd = openSync(this.#path, 'r');
    return this.#fd;
  }

  sync(done: (err: Error | null) => void): void {
    let fd: number;
    try {
      fd = this.#open();
    } catch (err) {
      queueMicrotask(() => done(err as Error));
      return;
    }
    this.#running++;
    fdatasync(fd, (err) => {
      this.#running--;
      if (this.#closing && this.#running === 0) this.#release();
      done(err);
    });
  }

  syncNow(): void {
    fdatasyncSync(this.#open());
  }

  close(): void {
    this.#closing = true;
    if (this.#running === 0) this.#release();
  }

  #release(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

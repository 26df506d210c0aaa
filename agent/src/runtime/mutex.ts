/**
 * One operation per key at a time (per-stack serialisation of apply, remove, restart and reconcile
 * passes). FIFO; entries are dropped when idle, so memory does not grow with the number of keys seen.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** True while an operation holds or waits for `key`. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

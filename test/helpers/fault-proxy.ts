/**
 * A TCP fault proxy on loopback for link-fault tests (DESIGN §8): clients connect to `port`, the
 * proxy connects to the target and forwards bytes both ways, with faults switchable at any time.
 *
 *   up   = client → target        down = target → client
 *
 * - `cut()` closes every current connection (new ones are still accepted).
 * - `blackhole(true)` stops forwarding without closing anything, like a dead link: the proxy stops
 *   reading, so TCP backpressure builds up at the sender, and new connections are accepted but
 *   not connected onwards. `blackhole(false)` delivers what was held, in order and intact, as TCP
 *   retransmission would if the link came back before either side gave up.
 * - `delay(ms)` adds one-way latency to every chunk in both directions (so a round trip gets 2×).
 * - `throttle(bytesPerSec)` limits each direction with a token bucket (burst: 1/10 s of rate, at
 *   least 64 bytes), shared by all connections like one link's bandwidth; `throttle(null)` lifts it.
 * - `resetRandom(p)` resets (RST) a connection with probability p for each chunk received.
 * - `truncate(n)` forwards at most n more bytes per connection and direction, then closes the
 *   connection: a peer sees a packet cut off mid-way. `truncate(null)` lifts it.
 * - `refuse(true)` resets new connections at once (the service seems down).
 * - `stats()`/`bytes` count TCP payload per direction: `received` (read from the sender) and
 *   `forwarded` (written to the receiver).
 *
 * Nothing is buffered without bound: a direction whose queue passes 1 MiB stops reading its sender.
 */
import { createServer, type Server, Socket } from 'node:net';
import { onCurrentTestFinished } from './tmp.js';

export type Direction = 'up' | 'down';

export interface FaultProxyOptions {
  targetPort: number;
  targetHost?: string;
  /** Port to listen on, on 127.0.0.1 (default 0: the kernel picks). */
  listenPort?: number;
  /** Random source for resetRandom (default Math.random); pass a seeded one to reproduce. */
  random?: () => number;
}

export interface DirectionStats {
  received: number;
  forwarded: number;
}

export interface FaultProxyStats {
  up: DirectionStats;
  down: DirectionStats;
  /** Connections currently open, and accepted since start (or resetStats). */
  open: number;
  accepted: number;
  /** Connections ended by resetRandom, truncate or refuse. */
  resets: number;
  truncations: number;
  refused: number;
}

export interface FaultProxy {
  readonly port: number;
  /** Payload bytes forwarded per direction. */
  readonly bytes: { up: number; down: number };
  stats(): FaultProxyStats;
  resetStats(): void;
  cut(opts?: { reset?: boolean }): void;
  blackhole(on: boolean): void;
  delay(ms: number): void;
  throttle(bytesPerSec: number | null): void;
  resetRandom(probability: number): void;
  truncate(n: number | null): void;
  refuse(on: boolean): void;
  /** Stops listening and closes every connection. Idempotent. */
  close(): Promise<void>;
}

const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;

interface Bucket {
  rate: number;
  capacity: number;
  tokens: number;
  at: number;
}

interface ProxyState {
  blackholed: boolean;
  delayMs: number;
  buckets: Record<Direction, Bucket | null>;
  resetProbability: number;
  truncateAfter: number | null;
  random: () => number;
  stats: FaultProxyStats;
}

/** One direction of one connection: a FIFO of chunks pumped from `src` to `dst`. */
class Pipe {
  private readonly queue: Array<{ data: Buffer; at: number }> = [];
  private queued = 0;
  private eof = false;
  private ended = false;
  private waiter: (() => void) | null = null;
  private notified = false;
  /** Bytes still allowed before truncation (null: unlimited). */
  budget: number | null;

  constructor(
    private readonly state: ProxyState,
    private readonly conn: Connection,
    private readonly dir: Direction,
    private readonly src: Socket,
    private readonly dst: Socket,
  ) {
    this.budget = state.truncateAfter;
    src.on('data', (chunk: Buffer) => this.push(chunk));
    src.on('end', () => {
      this.eof = true;
      this.notify();
    });
    dst.on('drain', () => this.notify());
  }

  private push(chunk: Buffer): void {
    if (this.conn.closed) return;
    this.state.stats[this.dir].received += chunk.length;
    if (this.state.resetProbability > 0 && this.state.random() < this.state.resetProbability) {
      this.state.stats.resets += 1;
      this.conn.close(true);
      return;
    }
    this.queue.push({ data: chunk, at: Date.now() + this.state.delayMs });
    this.queued += chunk.length;
    this.flowControl();
    this.notify();
  }

  /** Pause the sender while blackholed or while the queue is above the high-water mark. */
  flowControl(): void {
    if (this.conn.closed) return;
    if (this.state.blackholed || this.queued > HIGH_WATER) this.src.pause();
    else if (this.queued < LOW_WATER) this.src.resume();
  }

  notify(): void {
    this.notified = true;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private wait(ms?: number): Promise<void> {
    if (this.notified) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      this.waiter = () => {
        if (timer) clearTimeout(timer);
        this.notified = false;
        resolve();
      };
      if (ms !== undefined) {
        timer = setTimeout(
          () => {
            this.waiter = null;
            resolve();
          },
          Math.max(1, Math.ceil(ms)),
        );
      }
    });
  }

  async run(): Promise<void> {
    while (!this.conn.closed) {
      if (this.state.blackholed || !this.conn.connected) {
        await this.wait();
        continue;
      }
      const head = this.queue[0];
      if (!head) {
        if (this.eof && !this.ended) {
          // The sender half-closed and everything before its FIN is delivered: pass the FIN on.
          this.ended = true;
          if (!this.dst.destroyed) this.dst.end();
        }
        await this.wait();
        continue;
      }
      if (this.dst.destroyed) {
        // The receiver is gone (closed by its peer): what is still queued for it is lost.
        this.queue.length = 0;
        this.queued = 0;
        this.flowControl();
        continue;
      }
      if (this.dst.writableNeedDrain) {
        await this.wait();
        continue;
      }
      const now = Date.now();
      if (head.at > now) {
        await this.wait(head.at - now);
        continue;
      }
      let n = head.data.length;
      const bucket = this.state.buckets[this.dir];
      if (bucket) {
        refill(bucket, now);
        const want = Math.min(n, bucket.capacity);
        if (bucket.tokens < want) {
          await this.wait(((want - bucket.tokens) / bucket.rate) * 1000);
          continue;
        }
        n = Math.min(n, Math.floor(bucket.tokens));
        bucket.tokens -= n;
      }
      if (this.budget !== null) n = Math.min(n, this.budget);
      const piece = head.data.subarray(0, n);
      if (n === head.data.length) this.queue.shift();
      else head.data = head.data.subarray(n);
      this.queued -= n;
      this.state.stats[this.dir].forwarded += n;
      if (this.budget !== null) {
        this.budget -= n;
        if (this.budget <= 0) {
          this.state.stats.truncations += 1;
          this.conn.truncate(this.dst, piece);
          return;
        }
      }
      this.dst.write(piece);
      this.flowControl();
    }
  }
}

function refill(b: Bucket, now: number): void {
  b.tokens = Math.min(b.capacity, b.tokens + ((now - b.at) / 1000) * b.rate);
  b.at = now;
}

class Connection {
  closed = false;
  connected = false;
  private socketsClosed = 0;
  readonly target: Socket;
  readonly pipes: Pipe[] = [];

  constructor(
    private readonly state: ProxyState,
    readonly client: Socket,
    targetPort: number,
    targetHost: string,
    private readonly onClosed: (c: Connection) => void,
  ) {
    client.setNoDelay(true);
    this.target = new Socket({ allowHalfOpen: true });
    this.target.setNoDelay(true);
    const up = new Pipe(state, this, 'up', client, this.target);
    const down = new Pipe(state, this, 'down', this.target, client);
    this.pipes.push(up, down);
    for (const s of [client, this.target]) {
      // An error (ECONNRESET, EPIPE, refused) resets the other side too. A clean close of one side
      // does not: what it sent before its FIN is still delivered and the FIN passed on (Pipe.run);
      // the connection is done when both sides have closed.
      s.on('error', () => this.close(true));
      s.on('close', (hadError) => {
        if (hadError) this.close(true);
        else if (++this.socketsClosed >= 2 || !this.connected) this.close(false);
        else this.notifyAll();
      });
    }
    this.target.on('connect', () => {
      this.connected = true;
      this.notifyAll();
    });
    this.startConnect = () => this.target.connect(targetPort, targetHost);
    for (const p of this.pipes) void p.run();
    this.kick();
  }

  private startConnect: (() => void) | null;

  /** Connects onwards unless blackholed (then on the next kick). */
  kick(): void {
    if (this.closed || this.state.blackholed || !this.startConnect) return;
    const go = this.startConnect;
    this.startConnect = null;
    go();
  }

  notifyAll(): void {
    for (const p of this.pipes) {
      p.flowControl();
      p.notify();
    }
  }

  truncate(dst: Socket, lastPiece: Buffer): void {
    if (this.closed) return;
    this.closed = true;
    const other = dst === this.client ? this.target : this.client;
    other.destroy();
    dst.end(lastPiece);
    setTimeout(() => dst.destroy(), 1_000).unref();
    this.finish();
  }

  close(reset: boolean): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [this.client, this.target]) {
      if (s.destroyed) continue;
      if (reset && s.readyState !== 'opening' && s.readyState !== 'closed') s.resetAndDestroy();
      else s.destroy();
    }
    this.finish();
  }

  private finish(): void {
    this.startConnect = null;
    for (const p of this.pipes) p.notify();
    this.onClosed(this);
  }
}

function emptyStats(): FaultProxyStats {
  return {
    up: { received: 0, forwarded: 0 },
    down: { received: 0, forwarded: 0 },
    open: 0,
    accepted: 0,
    resets: 0,
    truncations: 0,
    refused: 0,
  };
}

/** Starts a proxy on 127.0.0.1; closed when the current test finishes (else call close()). */
export async function createFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const targetHost = opts.targetHost ?? '127.0.0.1';
  const state: ProxyState = {
    blackholed: false,
    delayMs: 0,
    buckets: { up: null, down: null },
    resetProbability: 0,
    truncateAfter: null,
    random: opts.random ?? Math.random,
    stats: emptyStats(),
  };
  let refusing = false;
  const conns = new Set<Connection>();
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (client) => {
    state.stats.accepted += 1;
    if (refusing) {
      state.stats.refused += 1;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    state.stats.open += 1;
    const conn = new Connection(state, client, opts.targetPort, targetHost, (c) => {
      if (conns.delete(c)) state.stats.open -= 1;
    });
    conns.add(conn);
    if (state.blackholed) conn.notifyAll();
  });
  server.on('error', () => {});
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort ?? 0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') reject(new Error('no TCP address'));
      else resolve(addr.port);
    });
  });

  const everyConn = (fn: (c: Connection) => void): void => {
    for (const c of [...conns]) fn(c);
  };
  let closing: Promise<void> | undefined;

  const proxy: FaultProxy = {
    port,
    get bytes() {
      return { up: state.stats.up.forwarded, down: state.stats.down.forwarded };
    },
    stats: () => structuredClone(state.stats),
    resetStats() {
      const open = state.stats.open;
      state.stats = emptyStats();
      state.stats.open = open;
    },
    cut(cutOpts = {}) {
      everyConn((c) => c.close(cutOpts.reset ?? false));
    },
    blackhole(on) {
      state.blackholed = on;
      everyConn((c) => {
        c.kick();
        c.notifyAll();
      });
    },
    delay(ms) {
      if (!(ms >= 0)) throw new RangeError(`delay must be >= 0, got ${ms}`);
      state.delayMs = ms;
    },
    throttle(bytesPerSec) {
      if (bytesPerSec === null || bytesPerSec === 0) {
        state.buckets = { up: null, down: null };
      } else {
        if (!(bytesPerSec > 0)) throw new RangeError(`throttle must be > 0, got ${bytesPerSec}`);
        const capacity = Math.max(64, Math.floor(bytesPerSec / 10));
        const bucket = (): Bucket => ({ rate: bytesPerSec, capacity, tokens: capacity, at: Date.now() });
        state.buckets = { up: bucket(), down: bucket() };
      }
      everyConn((c) => c.notifyAll());
    },
    resetRandom(probability) {
      if (!(probability >= 0 && probability <= 1)) throw new RangeError(`probability must be in [0, 1]`);
      state.resetProbability = probability;
    },
    truncate(n) {
      if (n !== null && !(n >= 0)) throw new RangeError(`truncate must be >= 0 or null, got ${n}`);
      state.truncateAfter = n;
      everyConn((c) => {
        for (const p of c.pipes) p.budget = n;
        c.notifyAll();
      });
    },
    refuse(on) {
      refusing = on;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        everyConn((c) => c.close(false));
        server.close(() => resolve());
      });
      return closing;
    },
  };
  onCurrentTestFinished(() => proxy.close());
  return proxy;
}

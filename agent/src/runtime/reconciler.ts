/**
 * The reconciliation loop (I7): engine events plus a periodic full pass, with no network needed (it
 * only talks to the local engine).
 *
 * - Events: this site's managed containers only (label filters), streamed and dropped line by line;
 *   each event marks its stack dirty; dirty stacks are passed after `debounceMs` (bursts collapse).
 * - Period: every `periodMs` (default 30 s) a full pass over every known stack. Batches never
 *   overlap: a period or event that comes while a batch runs is folded into the next batch.
 * - The events stream is re-opened when it ends or fails (backoff 1 s doubling to 30 s), followed by
 *   a full pass for what was missed meanwhile.
 * - After each batch of passes the full snapshot is taken and `onChange` called when it differs from
 *   the last one reported (only the last one's JSON is kept).
 * - Each pass goes through the runtime's per-stack mutex (`pass`), so it never interleaves with an
 *   apply, remove or restart of the same stack.
 * - `close()` stops timers and the stream and waits for the batch in progress.
 */
import type Dockerode from 'dockerode';
import type { Logger } from 'pino';
import type { StackState } from '../../../protocol/src/index.js';
import { describe } from './errors.js';
import { siteFilters } from './observe.js';
import { LABELS } from './types.js';

export interface ReconcilerDeps {
  readonly docker: Dockerode;
  readonly site: string;
  readonly log: Logger;
  readonly periodMs: number;
  readonly debounceMs: number;
  /** Stack names a full pass visits. */
  readonly stacks: () => readonly string[];
  /** One serialised pass over a stack. */
  readonly pass: (stack: string) => Promise<void>;
  readonly snapshot: () => Promise<StackState[]>;
  readonly onChange: (stacks: StackState[]) => void;
}

const EVENTS = [
  'create',
  'start',
  'die',
  'stop',
  'kill',
  'destroy',
  'pause',
  'unpause',
  'rename',
  'health_status',
];
const MAX_LINE = 64 * 1024;

export class Reconciler {
  private closed = false;
  private stream: (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
  private readonly dirty = new Set<string>();
  private full = false;
  private debounce: NodeJS.Timeout | undefined;
  private period: NodeJS.Timeout | undefined;
  private reconnect: NodeJS.Timeout | undefined;
  private reconnectDelay = 1000;
  private running: Promise<void> | undefined;
  private lastReported: string | undefined;

  constructor(private readonly d: ReconcilerDeps) {}

  async start(): Promise<void> {
    await this.subscribe();
    this.requestFull();
    this.armPeriod();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.debounce);
    clearTimeout(this.period);
    clearTimeout(this.reconnect);
    this.stream?.destroy?.();
    this.stream = undefined;
    await this.running;
  }

  /** Marks a stack for a pass after the debounce delay. */
  touch(stack: string): void {
    this.dirty.add(stack);
    this.arm();
  }

  /** Asks for a pass over every known stack. */
  requestFull(): void {
    this.full = true;
    this.arm();
  }

  private arm(): void {
    if (this.closed || this.debounce || this.running) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.running = this.batch().finally(() => {
        this.running = undefined;
        if (this.full || this.dirty.size > 0) this.arm();
      });
    }, this.d.debounceMs);
    this.debounce.unref();
  }

  private armPeriod(): void {
    if (this.closed) return;
    this.period = setTimeout(() => {
      this.requestFull();
      this.armPeriod();
    }, this.d.periodMs);
    this.period.unref();
  }

  private async batch(): Promise<void> {
    const stacks = new Set(this.dirty);
    this.dirty.clear();
    if (this.full) {
      this.full = false;
      try {
        for (const s of this.d.stacks()) stacks.add(s);
      } catch (err) {
        this.d.log.error({ err: describe(err) }, 'desired() failed; full pass skipped');
      }
    }
    for (const stack of [...stacks].sort()) {
      if (this.closed) return;
      try {
        await this.d.pass(stack);
      } catch (err) {
        this.d.log.error({ stack, err: describe(err) }, 'reconcile pass failed');
      }
    }
    if (this.closed) return;
    try {
      const snap = await this.d.snapshot();
      const json = JSON.stringify(snap);
      if (json !== this.lastReported) {
        this.lastReported = json;
        this.d.onChange(snap);
      }
    } catch (err) {
      this.d.log.warn({ err: describe(err) }, 'snapshot after reconcile failed');
    }
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return;
    let stream: NodeJS.ReadableStream & { destroy?: () => void };
    try {
      stream = (await this.d.docker.getEvents({
        filters: { type: ['container'], event: EVENTS, label: siteFilters(this.d.site).label },
      })) as typeof stream;
    } catch (err) {
      this.d.log.warn({ err: describe(err), retryMs: this.reconnectDelay }, 'engine events unavailable');
      this.scheduleReconnect();
      return;
    }
    if (this.closed) {
      stream.destroy?.();
      return;
    }
    this.stream = stream;
    const opened = Date.now();
    let buf = '';
    stream.on('data', (chunk: Buffer | string) => {
      buf += chunk.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        this.onEvent(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
      if (buf.length > MAX_LINE) buf = '';
    });
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      if (this.stream === stream) this.stream = undefined;
      if (this.closed) return;
      if (Date.now() - opened > 60_000) this.reconnectDelay = 1000;
      this.d.log.warn({ why, retryMs: this.reconnectDelay }, 'engine events stream ended; reconnecting');
      this.scheduleReconnect();
    };
    stream.on('end', () => end('end'));
    stream.on('close', () => end('close'));
    stream.on('error', (err: Error) => end(describe(err)));
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    const delay = this.reconnectDelay;
    this.reconnectDelay = Math.min(this.reconnectDelay * 2, 30_000);
    this.reconnect = setTimeout(() => {
      this.reconnect = undefined;
      void this.subscribe().then(() => {
        if (this.stream) this.requestFull();
      });
    }, delay);
    this.reconnect.unref();
  }

  private onEvent(line: string): void {
    if (!line.trim()) return;
    try {
      const ev = JSON.parse(line) as { Actor?: { Attributes?: Record<string, string> } };
      const attrs = ev.Actor?.Attributes;
      const stack = attrs?.[LABELS.stack];
      if (attrs?.[LABELS.site] === this.d.site && typeof stack === 'string') this.touch(stack);
    } catch {
      // an unreadable event line is dropped
    }
  }
}

/**
 * Broker benchmark, part 3: the broker process's memory (RSS; for the Node brokers also heapUsed +
 * external after GC) at a baseline, with C connected idle agents (clean=false, subscribed to their
 * cmd topic), after they all went offline (C offline sessions), after Q queued 1 KB commands for each
 * of them, and for one offline session as its queue grows. One broker at a time, fresh process each.
 */
import type { MqttClient } from 'mqtt';
import { type BenchBroker, type BrokerKind, type Mem, startBroker } from './lib/brokers.js';
import { close, cmdTopic, inBatches, open, Payloads, publishWindowed, type Target } from './lib/mqtt-load.js';

export interface MemoryConfig {
  /** Connected clients, then offline sessions. */
  readonly clients: number;
  /** Queued 1 KB messages per offline session. */
  readonly queued: number;
  /** Queue depths of the single deep session, increasing. */
  readonly depths: readonly number[];
  readonly messageBytes: number;
  readonly window: number;
  readonly log: (line: string) => void;
}

export interface MemoryResult {
  readonly kind: BrokerKind;
  readonly baseline: Mem;
  readonly connected: Mem;
  readonly offline: Mem;
  readonly queued: Mem;
  /** Memory at each depth of the deep session's queue (after the stages above). */
  readonly depths: ReadonlyArray<{ messages: number; mem: Mem }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Lets the broker finish what the last acknowledged packets started (aedes enqueues after PUBACK). */
const SETTLE_MS = 500;

/**
 * One-time costs (lazy compilation and inline caches of every path, prepared statements, pools) are
 * not per client: a few sessions go through every stage first (connect, subscribe, offline, queue,
 * reconnect and drain), then are discarded with a clean=true connection.
 */
async function warmUp(t: Target, c: MemoryConfig): Promise<void> {
  const ids = Array.from({ length: 50 }, (_, i) => `warm-${String(i).padStart(3, '0')}`);
  await inBatches(ids, 25, async (id) => {
    const cl = await open(t, id, 'agent', false);
    await cl.subscribeAsync(cmdTopic(id), { qos: 1 });
    await close(cl);
  });
  const perClient = 20;
  const pub = await open(t, 'controller', 'controller', true);
  try {
    const p = new Payloads(c.messageBytes);
    await publishWindowed(pub, ids.length * perClient, (i) => cmdTopic(ids[i % ids.length]!), p, c.window);
  } finally {
    await close(pub);
  }
  let got = 0;
  const want = ids.length * perClient;
  let resolve!: () => void;
  const all = new Promise<void>((r) => {
    resolve = r;
  });
  const onMessage = (): void => {
    if (++got === want) resolve();
  };
  const again: MqttClient[] = [];
  try {
    await inBatches(ids, 25, async (id) => {
      again.push(await open(t, id, 'agent', false, onMessage));
    });
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      all,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`memory warm-up: drained ${got} of ${want}`)), 60_000);
      }),
    ]).finally(() => clearTimeout(timer));
  } finally {
    await inBatches(again.splice(0), 25, close);
  }
  await inBatches(ids, 25, async (id) => close(await open(t, id, 'agent', true)));
}

function fmtMem(m: Mem): string {
  const mb = (b: number) => (b / 2 ** 20).toFixed(1);
  return `rss ${mb(m.rss)} MB${m.heap === undefined ? '' : `, heap+ext ${mb(m.heap)} MB`}`;
}

export async function measureMemory(kind: BrokerKind, c: MemoryConfig): Promise<MemoryResult> {
  const broker: BenchBroker = await startBroker(kind);
  const clients: MqttClient[] = [];
  let pub: MqttClient | undefined;
  try {
    const t: Target = { port: broker.port };
    const ids = Array.from({ length: c.clients }, (_, i) => `mem-${String(i).padStart(5, '0')}`);
    const measure = async (stage: string): Promise<Mem> => {
      await sleep(SETTLE_MS);
      const m = await broker.mem();
      c.log(`${kind} ${stage}: ${fmtMem(m)}`);
      return m;
    };
    await warmUp(t, c);
    const baseline = await measure('baseline (after a warm-up)');

    await inBatches(ids, 50, async (id) => {
      const cl = await open(t, id, 'agent', false);
      clients.push(cl);
      await cl.subscribeAsync(cmdTopic(id), { qos: 1 });
    });
    const connected = await measure(`${c.clients} connected`);

    await inBatches(clients.splice(0), 50, close);
    await sleep(SETTLE_MS);
    const offline = await measure(`${c.clients} offline sessions`);

    pub = await open(t, 'controller', 'controller', true);
    const per = new Payloads(c.messageBytes);
    await publishWindowed(pub, c.clients * c.queued, (i) => cmdTopic(ids[i % c.clients]!), per, c.window);
    const queued = await measure(`${c.clients} offline sessions × ${c.queued} queued`);

    const deep = await open(t, 'mem-deep', 'agent', false);
    await deep.subscribeAsync(cmdTopic('mem-deep'), { qos: 1 });
    await close(deep);
    await sleep(SETTLE_MS);
    const depths: Array<{ messages: number; mem: Mem }> = [];
    let have = 0;
    for (const d of c.depths) {
      await publishWindowed(
        pub,
        d - have,
        () => cmdTopic('mem-deep'),
        new Payloads(c.messageBytes),
        c.window,
      );
      have = d;
      depths.push({ messages: d, mem: await measure(`deep session with ${d} queued`) });
    }
    return { kind, baseline, connected, offline, queued, depths };
  } finally {
    await inBatches(clients.splice(0), 50, (cl) => close(cl).catch(() => undefined));
    if (pub) await close(pub).catch(() => undefined);
    await broker.close();
  }
}

/**
 * Broker benchmark, part 3: the broker process's memory (RSS; for the Node brokers also heapUsed +
 * external after GC) per offline persistent session, per Q queued 1 KB commands of each, per connected
 * idle site (clean=false, subscribed to its cmd topic), and per message as one offline session's queue
 * grows. One broker at a time, a fresh process each.
 *
 * Every figure is a marginal cost: a first tranche (C/5) absorbs one-time costs (lazy compilation,
 * pools, memory the allocator kept from the warm-up), then C more are added and the difference is
 * divided by C. A plain "minus the baseline" misleads both ways: one-time costs inflate it, and RSS
 * freed by an earlier stage and reused by the next deflates it (even below zero).
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

/** `count` more of something between two measurements: its marginal cost is (after − before) / count. */
export interface Step {
  readonly count: number;
  readonly before: Mem;
  readonly after: Mem;
}

export interface MemoryResult {
  readonly kind: BrokerKind;
  /** Offline persistent sessions (subscribed, empty queue). */
  readonly sessions: Step;
  /** Q queued messages for each of `count` offline sessions. */
  readonly queues: Step;
  /** Connected idle sites. */
  readonly connected: Step;
  /** Messages added to one offline session's queue (first to last depth). */
  readonly deep: Step;
  readonly depths: ReadonlyArray<{ messages: number; mem: Mem }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Lets the broker finish what the last acknowledged packets started (aedes enqueues after PUBACK). */
const SETTLE_MS = 300;

/**
 * One-time costs (lazy compilation and inline caches of every path, prepared statements, pools) are
 * not per client: a few sessions go through every stage first (connect, subscribe, offline, queue,
 * reconnect and drain), then are discarded with a clean=true connection.
 */
async function warmUp(t: Target, c: MemoryConfig): Promise<void> {
  const ids = Array.from({ length: 25 }, (_, i) => `warm-${String(i).padStart(3, '0')}`);
  await inBatches(ids, 25, async (id) => {
    const cl = await open(t, id, 'agent', false);
    await cl.subscribeAsync(cmdTopic(id), { qos: 1 });
    await close(cl);
  });
  const perClient = 10;
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
    const measure = async (stage: string): Promise<Mem> => {
      await sleep(SETTLE_MS);
      const m = await broker.mem();
      c.log(`${kind} ${stage}: ${fmtMem(m)}`);
      return m;
    };
    const idsOf = (prefix: string, from: number, n: number) =>
      Array.from({ length: n }, (_, i) => `${prefix}-${String(from + i).padStart(5, '0')}`);
    const first = Math.max(1, Math.round(c.clients / 5));
    // Mosquitto (C, no JIT) has nothing to warm; its allocator would only hand the warm-up's freed
    // memory to the first stages and hide their cost.
    if (kind !== 'mosquitto') await warmUp(t, c);
    pub = await open(t, 'controller', 'controller', true);
    const publisher = pub;

    // Offline sessions: connect, subscribe, disconnect.
    const addSessions = (ids: readonly string[]) =>
      inBatches(ids, 100, async (id) => {
        const cl = await open(t, id, 'agent', false);
        await cl.subscribeAsync(cmdTopic(id), { qos: 1 });
        await close(cl);
      });
    const s1 = idsOf('off', 0, first);
    const s2 = idsOf('off', first, c.clients);
    await addSessions(s1);
    const sessionsBefore = await measure(`${first} offline sessions`);
    await addSessions(s2);
    const sessionsAfter = await measure(`${first + c.clients} offline sessions`);

    // Q queued messages for each of them, interleaved across sessions as a rollout would.
    const queue = (ids: readonly string[]) =>
      publishWindowed(
        publisher,
        ids.length * c.queued,
        (i) => cmdTopic(ids[i % ids.length]!),
        new Payloads(c.messageBytes),
        c.window,
      );
    await queue(s1);
    const queuesBefore = await measure(`${c.queued} queued for ${first} of them`);
    await queue(s2);
    const queuesAfter = await measure(`${c.queued} queued for all ${first + c.clients}`);

    // Connected idle sites (clean=false, subscribed).
    const connect = (ids: readonly string[]) =>
      inBatches(ids, 100, async (id) => {
        const cl = await open(t, id, 'agent', false);
        clients.push(cl);
        await cl.subscribeAsync(cmdTopic(id), { qos: 1 });
      });
    await connect(idsOf('con', 0, first));
    const connectedBefore = await measure(`${first} connected`);
    await connect(idsOf('con', first, c.clients));
    const connectedAfter = await measure(`${first + c.clients} connected`);
    await inBatches(clients.splice(0), 50, close);

    // One offline session whose queue grows.
    const deep = await open(t, 'mem-deep', 'agent', false);
    await deep.subscribeAsync(cmdTopic('mem-deep'), { qos: 1 });
    await close(deep);
    const depths: Array<{ messages: number; mem: Mem }> = [];
    let have = 0;
    for (const d of c.depths) {
      await publishWindowed(
        publisher,
        d - have,
        () => cmdTopic('mem-deep'),
        new Payloads(c.messageBytes),
        c.window,
      );
      have = d;
      depths.push({ messages: d, mem: await measure(`deep session with ${d} queued`) });
    }
    const d0 = depths[0]!;
    const dn = depths[depths.length - 1]!;
    return {
      kind,
      sessions: { count: c.clients, before: sessionsBefore, after: sessionsAfter },
      queues: { count: c.clients, before: queuesBefore, after: queuesAfter },
      connected: { count: c.clients, before: connectedBefore, after: connectedAfter },
      deep: { count: dn.messages - d0.messages, before: d0.mem, after: dn.mem },
      depths,
    };
  } finally {
    await inBatches(clients.splice(0), 50, (cl) => close(cl).catch(() => undefined));
    if (pub) await close(pub).catch(() => undefined);
    await broker.close();
  }
}

/**
 * Delivery order for persistent sessions, and no silent drops (I1, I10; SPEC [BRK-6]).
 *
 * Two aedes 1.2.0 behaviours break store-and-forward once publishes are committed before their
 * PUBACK (persistence/durable-publish.ts), both measured in a 1,000-site reconnect storm
 * (scripts/sim, `--storm graceful`), broker instrumented per message:
 *
 * 1. **Counter dedupe drops live messages.** aedes forwards a live message to a client only if its
 *    `brokerCounter` is above the highest one already forwarded from the same broker id (a
 *    per-client high-water mark meant for clustered brokers). The durable gate claims the counter
 *    when the publish arrives but aedes delivers it after the commit, so a message that needed no
 *    commit (or committed in an earlier batch) can go out first; every lower counter delivered
 *    after it is then dropped — without an error, its queue row left for the next reconnect. Seen:
 *    18 acks and states in one run, 5 sites' final `applied` acks among them, commands stuck
 *    `accepted` for the whole run. The guard drops only exact duplicates instead (the same message
 *    twice, e.g. two overlapping subscriptions): it clears aedes' mark before each live delivery.
 * 2. **Live messages overtake the backlog.** A persistent session's subscriptions are restored
 *    before the CONNACK, and its stored queue is streamed after it. A message published meanwhile
 *    went straight to the socket, ahead of older queued messages on the same topic: in the storm,
 *    wills published while the controller was reconnecting reached it after the sites' newer
 *    `online` statuses, and 200–320 of 1,000 connected sites were shown offline. The guard holds
 *    live deliveries from the CONNECT until aedes reports the session ready (queue streamed), then
 *    releases them in arrival order, skipping those the stream already delivered. MQTT 3.1.1 §4.6
 *    asks for this order; nothing is written before the CONNACK either.
 *
 * Held messages are in memory only. For a persistent session each is also on disk (the durable
 * gate, or aedes' enqueue, stored it in the session's queue before delivering it), so dropping the
 * hold loses nothing: more than `maxHeld` held messages close the connection (the client
 * reconnects and gets them from its queue), as does any close before the session is ready.
 */
import type { Aedes, Client } from 'aedes';
import type { Logger } from 'pino';

type Deliver = (packet: DeliveredPacket, cb: () => void) => void;

/** What a delivery function receives (an aedes Packet). */
export interface DeliveredPacket {
  readonly topic?: string;
  readonly qos?: number;
  readonly retain?: boolean;
  readonly brokerId?: string;
  readonly brokerCounter?: number;
}

interface ClientState {
  /** Live deliveries waiting for the session to be ready, oldest first; undefined when released. */
  held: DeliveredPacket[] | undefined;
  /** Keys of messages delivered recently (insertion order: oldest first). */
  readonly recent: Set<string>;
  readonly deliver: Deliver;
}

export interface DeliveryGuardOptions {
  /** Live messages held for one connecting session before it is closed instead (default 10,000). */
  readonly maxHeld?: number;
  /** Keys remembered per client to recognise an exact duplicate (default 1,024). */
  readonly recent?: number;
  readonly log?: Logger;
  /** A session closed because its held messages exceeded `maxHeld`. */
  readonly onOverflow?: (clientId: string) => void;
}

export interface DeliveryStats {
  /** Live deliveries held, then released in order. */
  held: number;
  /** Held deliveries that the queue stream had already delivered (skipped on release). */
  skipped: number;
  /** Exact duplicates not delivered (the same message to the same client twice). */
  duplicates: number;
  /** Sessions closed because too many live messages waited for them. */
  overflows: number;
}

function keyOf(packet: DeliveredPacket): string | undefined {
  // Retained copies sent on SUBSCRIBE repeat a message on purpose; QoS 0 has no queue behind it.
  if (packet.retain === true || typeof packet.brokerId !== 'string') return undefined;
  if (typeof packet.brokerCounter !== 'number' || packet.brokerCounter <= 0) return undefined;
  return `${packet.brokerId}\u0000${packet.brokerCounter}`;
}

interface GuardedClient {
  id?: string;
  clean?: boolean;
  closed?: boolean;
  conn?: { destroy(err?: Error): void };
  duplicates?: Record<string, number>;
  deliverQoS: Deliver;
}

export class DeliveryGuard {
  readonly #clients = new WeakMap<object, ClientState>();
  readonly #maxHeld: number;
  readonly #recentMax: number;
  readonly #log: Logger | undefined;
  readonly #onOverflow: ((clientId: string) => void) | undefined;
  readonly stats: DeliveryStats = { held: 0, skipped: 0, duplicates: 0, overflows: 0 };

  constructor(o: DeliveryGuardOptions = {}) {
    this.#maxHeld = o.maxHeld ?? 10_000;
    this.#recentMax = o.recent ?? 1024;
    this.#log = o.log;
    this.#onOverflow = o.onOverflow;
  }

  /**
   * Installs the guard on a connecting client (call from aedes' `preConnect`, before aedes restores
   * the session's subscriptions, which capture `client.deliverQoS`). `clean` is the CONNECT's flag:
   * only a persistent session has a stored queue to stream, so only its live messages are held.
   */
  attach(client: Client, clean: boolean): void {
    const c = client as unknown as GuardedClient;
    if (this.#clients.has(c) || typeof c.deliverQoS !== 'function') return;
    const state: ClientState = {
      held: clean ? undefined : [],
      recent: new Set(),
      deliver: c.deliverQoS,
    };
    this.#clients.set(c, state);
    c.deliverQoS = (packet, cb) => {
      if (state.held !== undefined) {
        this.#hold(c, state, packet);
        setImmediate(cb); // never stall aedes' emitter on a client that is not ready
        return;
      }
      this.#deliver(c, state, packet, cb);
    };
  }

  /** The session is ready (its stored queue streamed): release held messages in order. */
  ready(client: Client): void {
    const c = client as unknown as GuardedClient;
    const state = this.#clients.get(c);
    const held = state?.held;
    if (state === undefined || held === undefined) return;
    state.held = undefined;
    for (const packet of held) {
      const key = keyOf(packet);
      if (key !== undefined && state.recent.has(key)) {
        this.stats.skipped++;
        continue;
      }
      this.#deliver(c, state, packet, noop);
    }
  }

  /** A message is being delivered to `client` from its stored queue (aedes' outgoingUpdate). */
  streamed(client: object, packet: DeliveredPacket): void {
    const state = this.#clients.get(client);
    const key = keyOf(packet);
    if (state !== undefined && key !== undefined) this.#remember(state, key);
  }

  /** How many messages are held for `client` (tests, diagnostics). */
  heldFor(client: Client): number {
    return this.#clients.get(client)?.held?.length ?? 0;
  }

  /** Wires the guard into an aedes broker: `ready` on each client ready, `streamed` on each queue delivery. */
  install(aedes: Aedes): void {
    aedes.on('clientReady', (client) => this.ready(client));
    const persistence = (aedes as unknown as { persistence: Record<string, unknown> }).persistence;
    const update = persistence.outgoingUpdate;
    if (typeof update !== 'function') return;
    persistence.outgoingUpdate = (client: object, packet: DeliveredPacket & { cmd?: string }) => {
      if (packet.cmd === undefined || packet.cmd === 'publish') this.streamed(client, packet);
      return update.call(persistence, client, packet);
    };
  }

  #hold(c: GuardedClient, state: ClientState, packet: DeliveredPacket): void {
    const held = state.held!;
    if (held.length >= this.#maxHeld) {
      if (c.closed === true) return;
      this.stats.overflows++;
      this.#log?.warn(
        { clientId: c.id, held: held.length },
        'session closed: too many live messages waiting for its stored queue; they stay queued',
      );
      state.held = [];
      this.#onOverflow?.(c.id ?? '');
      c.conn?.destroy(new Error('too many messages held while the stored queue was streamed'));
      return;
    }
    this.stats.held++;
    held.push(packet);
  }

  #deliver(c: GuardedClient, state: ClientState, packet: DeliveredPacket, cb: () => void): void {
    const key = keyOf(packet);
    if (key !== undefined) {
      if (state.recent.has(key)) {
        this.stats.duplicates++;
        setImmediate(cb);
        return;
      }
      this.#remember(state, key);
    }
    // aedes' own check drops any counter at or below the highest forwarded: clear the mark, so
    // only the exact-duplicate check above decides.
    const brokerId = packet.brokerId;
    if (typeof brokerId === 'string' && c.duplicates !== undefined) delete c.duplicates[brokerId];
    state.deliver.call(c, packet, cb);
  }

  #remember(state: ClientState, key: string): void {
    state.recent.delete(key);
    state.recent.add(key);
    if (state.recent.size > this.#recentMax) {
      const oldest = state.recent.values().next();
      if (oldest.done !== true) state.recent.delete(oldest.value);
    }
  }
}

function noop(): void {}

/**
 * Durable aedes 1.x persistence on SQLite (better-sqlite3, WAL, synchronous=FULL).
 *
 * Wiring (the broker's composition root):
 *
 *   const persistence = createSqlitePersistence({ path, log, queueLimits, sessionExpiryMs, onDrop });
 *   const aedes = await Aedes.createBroker({
 *     persistence,
 *     authorizePublish: persistence.durableAuthorizePublish(acl.authorizePublish),
 *   });
 *   setInterval(() => persistence.expireSessions(), hour).unref();
 *   // on shutdown, after aedes.close(): await persistence.close()   (aedes never closes it)
 *
 * Interface. aedes 1.x calls the async form of the aedes-persistence interface (every method
 * returns a promise or a Readable; `setup(broker)` must be an `async function`) and this class
 * implements exactly that; it passes the package's own abstract suite (`abstract.js`). Every
 * SQLite call is synchronous, so each promise settles after its transaction has committed.
 *
 * Durability (I5). Writes an acknowledgement depends on commit with synchronous=FULL before the
 * promise settles: enqueues, subscriptions, retained messages, wills, inbound QoS 2 state. Writes
 * whose loss to a power cut only causes a redelivery commit with synchronous=NORMAL (see
 * writer.ts). BUT aedes 1.2.0 writes the PUBACK of an inbound QoS 1 PUBLISH to the socket *before*
 * it calls the persistence (lib/handlers/publish.js), so a broker killed right after a PUBACK can
 * lose a message it acknowledged. `durableAuthorizePublish` closes that gap: used as aedes'
 * `authorizePublish` hook (which runs before the PUBACK), it stores the message for every matching
 * persistent session and commits, then lets aedes continue; when aedes then calls
 * `storeRetained`/`outgoingEnqueueCombi` for that packet, the work already done is skipped. It
 * does so by giving the packet its aedes `brokerId`/`brokerCounter` early (aedes' Packet keeps a
 * counter already present), so it depends on that aedes internal; the kill -9 test pins it.
 *
 * Queue cap policy (I8). `queueLimits` bounds each client's queue in messages and in bytes
 * (topic + payload). A message that would exceed either is not queued for that client (drop the
 * newest): it is counted (`stats().droppedMessages`), reported to `onDrop` (a per-site metric),
 * and logged once per episode; the publisher is still acknowledged and other clients still get
 * it. Why newest and not oldest: the controller keeps a small window of unacknowledged commands
 * per site and retries until it holds a signed ack (I1, I4), so a refused command is re-sent
 * later, while evicting an old one would silently break the order the agent already holds
 * (I3); it is also what Mosquitto does with max_queued_messages, which we must tolerate anyway
 * (DESIGN §2). If the refused message is also delivered live (client online), that delivery
 * goes ahead without a queue row instead of failing the client.
 *
 * Session expiry (I8). A persistent session whose client has not been connected for
 * `sessionExpiryMs` (default 30 days) is abandoned: `expireSessions(now)` deletes its
 * subscriptions, queue and QoS 2 state. Connection times come from the broker's `client` and
 * `clientDisconnect` events (subscribed in `setup`) and from connect-time calls; a connected
 * client is never expired.
 *
 * Heap. Only the QoS > 0 subscription trie (for `subscriptionsByTopic` on every publish), two
 * counters per non-empty queue, the set of connected client ids, and small bounded sets of
 * in-flight packets; queues, retained messages, wills and inbound packets stay on disk and
 * streams read them a page at a time.
 *
 * One broker process per database file: in-memory state mirrors the file.
 */
import { Readable } from 'node:stream';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { OutgoingStore } from './outgoing-store.js';
import { aedesShape, encodePacket } from './packet-codec.js';
import { RetainedStore } from './retained-store.js';
import { openDatabase, SCHEMA_VERSION } from './schema.js';
import { IncomingTable, SessionTable, WillTable } from './session-state.js';
import { SubscriptionStore } from './subscription-store.js';
import type {
  AuthorizePublish,
  BrokerRef,
  ClientRef,
  ExpiryResult,
  PacketLike,
  PersistenceStats,
  QueueStats,
  SqlitePersistenceOptions,
  SubscriptionIn,
  TopicSubscription,
} from './types.js';
import { Writer } from './writer.js';

export const DEFAULT_SESSION_EXPIRY_MS = 30 * 24 * 60 * 60 * 1000;

/** Packets acknowledged through `durableAuthorizePublish` whose aedes enqueue has not run yet. */
const MAX_PENDING = 10_000;
/** Sessions deleted per transaction by `expireSessions`. */
const EXPIRY_BATCH = 256;

const SYS_PREFIX = '$SYS/';

function noSuchPacket(): Error {
  return new Error('no such packet');
}

function pendingKey(packet: PacketLike): string | undefined {
  if (typeof packet.brokerId !== 'string' || typeof packet.brokerCounter !== 'number') return undefined;
  return `${packet.brokerId}\u0000${packet.brokerCounter}`;
}

function checkPositive(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isFinite(v) && v > 0)) {
    throw new TypeError(`${name} must be a positive number`);
  }
}

/** aedes' default authorizePublish: clients may not publish to $SYS. */
const defaultAuthorizePublish: AuthorizePublish = (_client, packet, callback) => {
  if (typeof packet.topic === 'string' && packet.topic.startsWith(SYS_PREFIX)) {
    callback(new Error(`${SYS_PREFIX} topic is reserved`));
    return;
  }
  callback(null);
};

export class SqlitePersistence {
  readonly #db: Database.Database;
  readonly #writer: Writer;
  readonly #log: Logger | undefined;
  readonly #now: () => number;
  readonly #expiryMs: number;
  readonly #subs: SubscriptionStore;
  readonly #outgoing: OutgoingStore;
  readonly #retained: RetainedStore;
  readonly #sessions: SessionTable;
  readonly #incoming: IncomingTable;
  readonly #wills: WillTable;
  readonly #connected = new Set<string>();
  readonly #pending = new Map<string, { clients: ReadonlySet<string>; retained: boolean }>();
  #broker: BrokerRef | undefined;
  #expiredSessions = 0;
  #closed = false;

  constructor(opts: SqlitePersistenceOptions) {
    checkPositive('sessionExpiryMs', opts.sessionExpiryMs);
    checkPositive('queueLimits.maxMessages', opts.queueLimits?.maxMessages);
    checkPositive('queueLimits.maxBytes', opts.queueLimits?.maxBytes);
    this.#log = opts.log?.child({ component: 'broker.persistence' });
    this.#now = opts.now ?? Date.now;
    this.#expiryMs = opts.sessionExpiryMs ?? DEFAULT_SESSION_EXPIRY_MS;
    const { db, migratedFrom } = openDatabase(opts.path);
    this.#db = db;
    try {
      this.#writer = new Writer(db);
      this.#sessions = new SessionTable(db);
      this.#incoming = new IncomingTable(db);
      this.#wills = new WillTable(db);
      this.#retained = new RetainedStore(db);
      this.#subs = new SubscriptionStore(db, this.#writer);
      this.#outgoing = new OutgoingStore({
        db,
        writer: this.#writer,
        log: this.#log,
        limits: opts.queueLimits,
        onDrop: opts.onDrop,
        onFirstMessage: (clientId) => this.#sessions.ensure(clientId, this.#now()),
      });
    } catch (err) {
      db.close();
      throw err;
    }
    const totals = this.#outgoing.totals();
    this.#log?.info(
      {
        path: opts.path,
        schema: SCHEMA_VERSION,
        migratedFrom,
        subscriptions: this.#subs.counts().subsCount,
        queuedClients: totals.clients,
        queuedMessages: totals.messages,
      },
      'broker persistence opened',
    );
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** The broker passed to `setup` (the abstract suite reads and mutates it). */
  get broker(): BrokerRef | undefined {
    return this.#broker;
  }

  /** Called by aedes from `listen()`. Must stay an `async function` (aedes checks). */
  async setup(broker: BrokerRef): Promise<void> {
    this.#broker = broker;
    broker.on?.('client', this.#onClient);
    broker.on?.('clientDisconnect', this.#onClientDisconnect);
  }

  /** Closes the database. Idempotent. aedes does not call it: the broker must, after `close()`. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#broker?.removeListener?.('client', this.#onClient);
    this.#broker?.removeListener?.('clientDisconnect', this.#onClientDisconnect);
    this.#pending.clear();
    this.#db.close();
    this.#log?.info('broker persistence closed');
  }

  /** aedes-persistence's name for `close`. */
  async destroy(): Promise<void> {
    await this.close();
  }

  readonly #onClient = (client: { id: string }): void => {
    this.#connected.add(client.id);
    this.#touchSafely(client.id);
  };

  readonly #onClientDisconnect = (client: { id: string }): void => {
    this.#connected.delete(client.id);
    this.#touchSafely(client.id);
  };

  /** Refreshes an existing session's last-seen time; never throws (it runs in event handlers). */
  #touchSafely(clientId: string): void {
    if (this.#closed) return;
    try {
      this.#writer.run(false, () => this.#sessions.touch(clientId, this.#now()));
    } catch (err) {
      this.#log?.error({ err, clientId }, 'could not record session activity');
    }
  }

  // ---- retained --------------------------------------------------------------------------

  async storeRetained(packet: PacketLike): Promise<void> {
    const key = pendingKey(packet);
    if (key !== undefined && this.#pending.get(key)?.retained === true) return; // stored before PUBACK
    this.#writer.run(true, () => this.#retained.store(packet));
  }

  createRetainedStream(pattern: string): Readable {
    return Readable.from(this.#retained.match([pattern]));
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    return Readable.from(this.#retained.match(patterns));
  }

  // ---- subscriptions ---------------------------------------------------------------------

  async addSubscriptions(client: ClientRef, subs: readonly SubscriptionIn[]): Promise<void> {
    this.#writer.run(true, () => {
      this.#subs.add(client.id, subs);
      this.#sessions.upsert(client.id, this.#now());
    });
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    this.#writer.run(true, () => this.#subs.remove(client.id, topics));
  }

  async subscriptionsByClient(client: ClientRef): Promise<SubscriptionIn[]> {
    const subs = this.#subs.byClient(client.id);
    if (subs.length > 0) this.#touchSafely(client.id);
    return subs;
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.#subs.counts();
  }

  async subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    return this.#subs.match(topic);
  }

  /**
   * Discards a session (CONNECT with clean=true, [MQTT-3.1.2-6]): its subscriptions and its
   * queue, which aedes would otherwise drain one row at a time. Inbound QoS 2 state goes with
   * `cleanIncoming`, which aedes calls separately.
   */
  async cleanSubscriptions(client: ClientRef): Promise<void> {
    this.#writer.run(true, () => {
      this.#subs.removeClient(client.id);
      this.#outgoing.deleteClient(client.id);
      this.#sessions.delete(client.id);
    });
  }

  // ---- outgoing queues -------------------------------------------------------------------

  async outgoingEnqueue(sub: { clientId: string }, packet: PacketLike): Promise<void> {
    this.#enqueue([sub], packet);
  }

  /** One transaction for all subscribers; one row per client even if several filters matched. */
  async outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: PacketLike): Promise<void> {
    this.#enqueue(subs, packet);
  }

  #enqueue(subs: ReadonlyArray<{ clientId: string }>, packet: PacketLike): void {
    const clients = new Set<string>();
    for (const s of subs) clients.add(s.clientId);
    const key = pendingKey(packet);
    const pending = key === undefined ? undefined : this.#pending.get(key);
    if (key !== undefined && pending !== undefined) {
      this.#pending.delete(key);
      for (const id of pending.clients) clients.delete(id); // queued before the PUBACK
    }
    if (clients.size === 0) return;
    const shaped = aedesShape(packet);
    const encoded = encodePacket(shaped);
    this.#writer.run(true, () => this.#outgoing.enqueue(clients, shaped, encoded));
  }

  async outgoingUpdate(client: ClientRef, packet: PacketLike): Promise<void> {
    const target = this.#outgoing.findUpdateTarget(client.id, packet);
    if (target === undefined) {
      if (this.#outgoing.wasDropped(client.id, packet)) return; // refused by the cap: deliver live only
      throw noSuchPacket();
    }
    if (target.sameBroker === 1) {
      const messageId = typeof packet.messageId === 'number' ? packet.messageId : null;
      this.#writer.run(false, () => this.#outgoing.setMessageId(target.seq, messageId));
      return;
    }
    const encoded = encodePacket(packet);
    this.#writer.run(true, () => this.#outgoing.replace(client.id, target, packet, encoded));
  }

  async outgoingClearMessageId(
    client: ClientRef,
    packet: PacketLike | null,
  ): Promise<PacketLike | undefined> {
    const messageId = typeof packet === 'object' && packet !== null ? packet.messageId : undefined;
    // A packet without an identifier was never sent; its row (if any) stays for the next attempt.
    if (typeof messageId !== 'number') return undefined;
    return this.#writer.run(false, () => this.#outgoing.clear(client.id, messageId));
  }

  /** The client's queue as it is now (later enqueues are delivered live), read lazily. */
  outgoingStream(client: ClientRef): Readable {
    const until = this.#outgoing.lastSeq(client.id);
    this.#touchSafely(client.id);
    return Readable.from(this.#outgoing.stream(client.id, until));
  }

  // ---- inbound QoS 2 ---------------------------------------------------------------------

  async incomingStorePacket(client: ClientRef, packet: PacketLike): Promise<void> {
    const messageId = packet.messageId;
    if (typeof messageId !== 'number') throw new TypeError('incoming packet has no messageId');
    const shaped = aedesShape(packet);
    shaped.messageId = messageId;
    const encoded = encodePacket(shaped);
    this.#writer.run(true, () => {
      this.#incoming.store(client.id, messageId, encoded);
      this.#sessions.ensure(client.id, this.#now());
    });
  }

  async incomingGetPacket(client: ClientRef, packet: PacketLike): Promise<PacketLike> {
    const found =
      typeof packet.messageId === 'number' ? this.#incoming.get(client.id, packet.messageId) : undefined;
    if (found === undefined) throw noSuchPacket();
    return found;
  }

  async incomingDelPacket(client: ClientRef, packet: PacketLike): Promise<void> {
    const messageId = packet.messageId;
    if (typeof messageId !== 'number') throw noSuchPacket();
    const deleted = this.#writer.run(true, () => this.#incoming.delete(client.id, messageId));
    if (!deleted) throw noSuchPacket();
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    this.#writer.run(true, () => this.#incoming.deleteClient(client.id));
  }

  // ---- wills -----------------------------------------------------------------------------

  /** Stores the will, stamped (as aedes expects, on the given object) with broker and client id. */
  async putWill(client: ClientRef, packet: PacketLike): Promise<void> {
    packet.brokerId = this.#broker?.id;
    packet.clientId = client.id;
    const encoded = encodePacket(packet);
    this.#writer.run(true, () => this.#wills.put(client.id, packet.brokerId ?? null, encoded));
  }

  async getWill(client: ClientRef): Promise<PacketLike | undefined> {
    return this.#wills.get(client.id);
  }

  async delWill(client: ClientRef): Promise<PacketLike | undefined> {
    const will = this.#wills.get(client.id);
    if (will !== undefined) this.#writer.run(true, () => this.#wills.delete(client.id));
    return will;
  }

  /** Wills held by brokers that are not in `brokers` (dead brokers, or this one's previous run). */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    return Readable.from(this.#wills.orphans(brokers));
  }

  getClientList(topic: string): Readable {
    return Readable.from(this.#subs.clientsByTopic(topic));
  }

  // ---- Outpost extensions ----------------------------------------------------------------

  /**
   * Wraps aedes' `authorizePublish` so that a QoS 1 PUBLISH is durably queued for every matching
   * persistent session (and stored, if retained) before aedes sends its PUBACK (I5; see the
   * module comment). `inner` is the broker's own check (ACL); it defaults to aedes' default
   * (no publishing to $SYS). A failed commit refuses the publish, so aedes drops the connection
   * without a PUBACK and the publisher retries.
   */
  durableAuthorizePublish(inner: AuthorizePublish = defaultAuthorizePublish): AuthorizePublish {
    return (client, packet, callback) => {
      inner(client, packet, (err) => {
        if (err) {
          callback(err);
          return;
        }
        try {
          this.#commitBeforeAck(packet as unknown as PacketLike);
        } catch (e) {
          this.#log?.error(
            { err: e, topic: packet.topic },
            'could not store a publish before acknowledging it',
          );
          callback(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        callback(null);
      });
    };
  }

  #commitBeforeAck(packet: PacketLike): void {
    const broker = this.#broker;
    if (packet.qos !== 1 || broker === undefined || typeof packet.topic !== 'string') return;
    if (typeof broker.counter !== 'number') return; // not aedes: no counter to claim
    // aedes' Packet keeps a brokerId/brokerCounter already present: claim the one it would assign.
    if (typeof packet.brokerId !== 'string' || packet.brokerId === '') packet.brokerId = broker.id;
    if (typeof packet.brokerCounter !== 'number' || packet.brokerCounter === 0) {
      broker.counter += 1;
      packet.brokerCounter = broker.counter;
    }
    const topic = packet.topic;
    let subs = this.#subs.match(topic);
    // as aedes' enqueueOffline: $SYS topics are not queued for wildcard-first filters
    if (topic.startsWith(SYS_PREFIX)) subs = subs.filter((s) => s.topic[0] !== '+' && s.topic[0] !== '#');
    const clients = new Set<string>();
    for (const s of subs) clients.add(s.clientId);
    const retained = packet.retain === true;
    if (clients.size === 0 && !retained) return;
    const shaped = aedesShape(packet);
    const encoded = encodePacket(shaped);
    this.#writer.run(true, () => {
      if (retained) this.#retained.store(shaped);
      if (clients.size > 0) this.#outgoing.enqueue(clients, shaped, encoded);
    });
    const key = pendingKey(packet) as string;
    this.#pending.set(key, { clients, retained });
    if (this.#pending.size > MAX_PENDING) {
      // aedes never reached its enqueue for the oldest (e.g. the PUBACK write failed): forget it.
      const oldest = this.#pending.keys().next();
      if (oldest.done !== true) this.#pending.delete(oldest.value);
    }
  }

  /**
   * Deletes sessions whose client has not been connected since `now - sessionExpiryMs`: their
   * subscriptions, queued messages and inbound QoS 2 state. Call it periodically (e.g. hourly).
   */
  expireSessions(now: number = this.#now()): ExpiryResult {
    const cutoff = now - this.#expiryMs;
    const ids = this.#sessions.idleSince(cutoff).filter((id) => !this.#connected.has(id));
    let messages = 0;
    for (let i = 0; i < ids.length; i += EXPIRY_BATCH) {
      const batch = ids.slice(i, i + EXPIRY_BATCH);
      messages += this.#writer.run(false, () => {
        let n = 0;
        for (const id of batch) {
          n += this.#outgoing.deleteClient(id);
          this.#subs.removeClient(id);
          this.#incoming.deleteClient(id);
          this.#sessions.delete(id);
        }
        return n;
      });
    }
    this.#expiredSessions += ids.length;
    if (ids.length > 0) {
      this.#log?.info({ sessions: ids.length, messages, cutoff }, 'expired abandoned sessions');
    }
    return { sessions: ids.length, messages, clientIds: ids };
  }

  /** Totals for metrics. */
  stats(): PersistenceStats {
    return { ...this.#outgoing.totals(), expiredSessions: this.#expiredSessions };
  }

  /** Queued messages and bytes of one client. */
  queueStats(clientId: string): QueueStats {
    return this.#outgoing.queueStats(clientId);
  }

  /** Queued messages and bytes of every client with a non-empty queue (a copy). */
  allQueueStats(): Map<string, QueueStats> {
    return this.#outgoing.allQueueStats();
  }

  /** When the client was last seen (ms), if it has a session. */
  sessionLastSeen(clientId: string): number | undefined {
    return this.#sessions.lastSeen(clientId);
  }
}

/** Opens (creating and migrating if needed) the broker database and returns the aedes persistence. */
export function createSqlitePersistence(opts: SqlitePersistenceOptions): SqlitePersistence {
  return new SqlitePersistence(opts);
}

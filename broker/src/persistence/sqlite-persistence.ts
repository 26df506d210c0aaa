/**
 * Durable aedes 1.x persistence on SQLite (better-sqlite3, WAL; durable commits fsynced before they
 * settle).
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
 * implements exactly that; it passes the package's own abstract suite (`abstract.js`). Calls are
 * run in order and group-committed once per event-loop turn (writer.ts); each promise settles
 * after the transaction holding its work has committed.
 *
 * Durability (I5). Writes an acknowledgement depends on are committed and their WAL fsynced before the
 * promise settles: enqueues, subscriptions, retained messages, wills, inbound QoS 2 state — for a
 * file database by an fdatasync of the WAL on the libuv pool after a synchronous=NORMAL commit
 * (`walSync: 'async'`, the default: wal-sync.ts), or inside COMMIT with synchronous=FULL
 * (`walSync: 'full'`). Writes whose loss to a power cut only causes a redelivery commit with
 * synchronous=NORMAL and settle at once (writer.ts).
 * But aedes 1.2.0 writes the PUBACK of an inbound QoS 1 PUBLISH *before* it calls the persistence,
 * so the broker must also use `durableAuthorizePublish` as its `authorizePublish` hook: it commits
 * the message before aedes sends the PUBACK (durable-publish.ts explains how, and its coupling).
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
import { DurablePublishGate } from './durable-publish.js';
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
import { WalFile, type WalSync } from './wal-sync.js';
import { expectedError, Writer } from './writer.js';

export const DEFAULT_SESSION_EXPIRY_MS = 30 * 24 * 60 * 60 * 1000;

/** Sessions deleted per transaction by `expireSessions`. */
const EXPIRY_BATCH = 256;

/** aedes-persistence's error for an unknown packet (aedes matches on nothing but its presence). */
function noSuchPacket(): Error {
  return expectedError('no such packet', 'ERR_PERSISTENCE_NO_SUCH_PACKET');
}

function checkPositive(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isFinite(v) && v > 0)) {
    throw new TypeError(`${name} must be a positive number`);
  }
}

/** The WAL sync for durable commits (writer.ts): off the event loop for a file database in WAL mode. */
function walSyncFor(db: Database.Database, mode: SqlitePersistenceOptions['walSync']): WalSync | undefined {
  if (typeof mode === 'object') return mode;
  if (mode === 'full' || db.memory) return undefined;
  if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
  return new WalFile(db.name);
}

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
  /** The connection whose will is stored, per client id (see delWill). */
  readonly #willOwners = new Map<string, WeakRef<ClientRef>>();
  readonly #gate: DurablePublishGate;
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
      this.#writer = new Writer(db, walSyncFor(db, opts.walSync));
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
        isConnected: (clientId) => this.#connected.has(clientId),
      });
      this.#gate = new DurablePublishGate({
        writer: this.#writer,
        subs: this.#subs,
        outgoing: this.#outgoing,
        retained: this.#retained,
        broker: () => this.#broker,
        log: this.#log,
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
    this.#broker?.removeListener?.('client', this.#onClient);
    this.#broker?.removeListener?.('clientDisconnect', this.#onClientDisconnect);
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
    this.#writer.close(); // commits what is queued
    this.#gate.clear();
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
    const now = this.#now();
    this.#writer
      .submit(false, () => this.#sessions.touch(clientId, now))
      .catch((err: unknown) => this.#log?.error({ err, clientId }, 'could not record session activity'));
  }

  // ---- retained --------------------------------------------------------------------------

  async storeRetained(packet: PacketLike): Promise<void> {
    if (this.#gate.retainedStored(packet)) return; // stored before the PUBACK
    await this.#writer.submit(true, () => this.#retained.store(packet));
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern]);
  }

  createRetainedStreamCombi(patterns: readonly string[]): Readable {
    this.#writer.flush(); // the stream reads the database directly: include what is queued
    return Readable.from(this.#retained.match(patterns));
  }

  // ---- subscriptions ---------------------------------------------------------------------

  async addSubscriptions(client: ClientRef, subs: readonly SubscriptionIn[]): Promise<void> {
    const now = this.#now();
    await this.#writer.submit(true, () => {
      this.#subs.add(client.id, subs);
      this.#sessions.upsert(client.id, now);
    });
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    await this.#writer.submit(true, () => this.#subs.remove(client.id, topics));
  }

  async subscriptionsByClient(client: ClientRef): Promise<SubscriptionIn[]> {
    const now = this.#now();
    return this.#writer.submit(false, () => {
      const subs = this.#subs.byClient(client.id);
      if (subs.length > 0) this.#sessions.touch(client.id, now);
      return subs;
    });
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.#writer.submit(false, () => this.#subs.counts());
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
    await this.#writer.submit(true, () => {
      this.#subs.removeClient(client.id);
      this.#outgoing.deleteClient(client.id);
      this.#sessions.delete(client.id);
    });
  }

  // ---- outgoing queues -------------------------------------------------------------------

  async outgoingEnqueue(sub: { clientId: string }, packet: PacketLike): Promise<void> {
    await this.#enqueue([sub], packet);
  }

  /** One transaction for all subscribers; one row per client even if several filters matched. */
  async outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: PacketLike): Promise<void> {
    await this.#enqueue(subs, packet);
  }

  async #enqueue(subs: ReadonlyArray<{ clientId: string }>, packet: PacketLike): Promise<void> {
    const clients = new Set<string>();
    for (const s of subs) clients.add(s.clientId);
    for (const id of this.#gate.consume(packet)) clients.delete(id); // queued before the PUBACK
    if (clients.size === 0) return;
    const shaped = aedesShape(packet);
    const encoded = encodePacket(shaped);
    await this.#writer.submit(true, () => this.#outgoing.enqueue(clients, shaped, encoded));
  }

  /**
   * Records the packet identifier of a delivery (in memory: a lost identifier is simply assigned
   * again on redelivery), or replaces the row (a PUBREL after PUBREC, durable).
   */
  async outgoingUpdate(client: ClientRef, packet: PacketLike): Promise<void> {
    await this.#writer.submit(packet.cmd !== 'publish', () => {
      const target = this.#outgoing.findUpdateTarget(client.id, packet);
      if (target === undefined) {
        if (this.#outgoing.wasDropped(client.id, packet)) return; // refused by the cap: live only
        throw noSuchPacket();
      }
      if (target.sameBroker === 1) this.#outgoing.setMessageId(client.id, target, packet);
      else this.#outgoing.replace(client.id, target, packet, encodePacket(packet));
    });
  }

  async outgoingClearMessageId(
    client: ClientRef,
    packet: PacketLike | null,
  ): Promise<PacketLike | undefined> {
    const messageId = typeof packet === 'object' && packet !== null ? packet.messageId : undefined;
    // A packet without an identifier was never sent; its row (if any) stays for the next attempt.
    if (typeof messageId !== 'number') return undefined;
    return this.#writer.submit(false, () => this.#outgoing.clear(client.id, messageId));
  }

  /** The client's queue as it is now (later enqueues are delivered live), read lazily. */
  outgoingStream(client: ClientRef): Readable {
    this.#writer.flush(); // include what is queued in the snapshot
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
    const now = this.#now();
    await this.#writer.submit(true, () => {
      this.#incoming.store(client.id, messageId, encoded);
      this.#sessions.ensure(client.id, now);
    });
  }

  async incomingGetPacket(client: ClientRef, packet: PacketLike): Promise<PacketLike> {
    const messageId = packet.messageId;
    if (typeof messageId !== 'number') throw noSuchPacket();
    return this.#writer.submit(false, () => {
      const found = this.#incoming.get(client.id, messageId);
      if (found === undefined) throw noSuchPacket();
      return found;
    });
  }

  async incomingDelPacket(client: ClientRef, packet: PacketLike): Promise<void> {
    const messageId = packet.messageId;
    if (typeof messageId !== 'number') throw noSuchPacket();
    await this.#writer.submit(true, () => {
      if (!this.#incoming.delete(client.id, messageId)) throw noSuchPacket();
    });
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    await this.#writer.submit(true, () => this.#incoming.deleteClient(client.id));
  }

  // ---- wills -----------------------------------------------------------------------------

  /** Stores the will, stamped (as aedes expects, on the given object) with broker and client id. */
  async putWill(client: ClientRef, packet: PacketLike): Promise<void> {
    packet.brokerId = this.#broker?.id;
    packet.clientId = client.id;
    const encoded = encodePacket(packet);
    const brokerId = packet.brokerId ?? null;
    this.#willOwners.set(client.id, new WeakRef(client));
    await this.#writer.submit(true, () => this.#wills.put(client.id, brokerId, encoded));
  }

  async getWill(client: ClientRef): Promise<PacketLike | undefined> {
    return this.#writer.submit(false, () => this.#wills.get(client.id));
  }

  /**
   * aedes deletes a will by client id (`{ id, brokerId }`, a new object) when a connection closes and
   * after its will sweep published one. A replaced connection's close runs after the connection that
   * replaced it stored its own will (a takeover, or a reconnect racing a dying connection's close):
   * deleting then would lose the live connection's will. So the will stays while the connection that
   * stored it is still open (aedes sets `closed` when it starts closing a connection).
   */
  async delWill(client: ClientRef): Promise<PacketLike | undefined> {
    return this.#writer.submit(true, () => {
      const owner = this.#willOwners.get(client.id)?.deref() as { closed?: unknown } | undefined;
      if (owner !== undefined && owner !== client && owner.closed === false) return undefined;
      this.#willOwners.delete(client.id);
      const will = this.#wills.get(client.id);
      if (will !== undefined) this.#wills.delete(client.id);
      return will;
    });
  }

  /** Wills held by brokers that are not in `brokers` (dead brokers, or this one's previous run). */
  streamWill(brokers: Readonly<Record<string, unknown>> = {}): Readable {
    this.#writer.flush();
    return Readable.from(this.#wills.orphans(brokers));
  }

  getClientList(topic: string): Readable {
    this.#writer.flush();
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
  durableAuthorizePublish(inner?: AuthorizePublish): AuthorizePublish {
    return this.#gate.wrap(inner);
  }

  /**
   * Deletes sessions whose client has not been connected since `now - sessionExpiryMs`: their
   * subscriptions, queued messages and inbound QoS 2 state. Call it periodically (e.g. hourly).
   */
  expireSessions(now: number = this.#now()): ExpiryResult {
    const cutoff = now - this.#expiryMs;
    const idle = this.#writer.runSync(false, () => this.#sessions.idleSince(cutoff));
    const candidates = idle.filter((id) => !this.#connected.has(id));
    const expired: string[] = [];
    let messages = 0;
    for (let i = 0; i < candidates.length; i += EXPIRY_BATCH) {
      const batch = candidates.slice(i, i + EXPIRY_BATCH);
      messages += this.#writer.runSync(false, () => {
        let n = 0;
        for (const id of batch) {
          if (this.#connected.has(id)) continue; // reconnected meanwhile
          n += this.#outgoing.deleteClient(id);
          this.#subs.removeClient(id);
          this.#incoming.deleteClient(id);
          this.#sessions.delete(id);
          expired.push(id);
        }
        return n;
      });
    }
    this.#expiredSessions += expired.length;
    if (expired.length > 0) {
      this.#log?.info({ sessions: expired.length, messages, cutoff }, 'expired abandoned sessions');
    }
    return { sessions: expired.length, messages, clientIds: expired };
  }

  /** Totals for metrics (including operations queued for the next commit). */
  stats(): PersistenceStats {
    this.#flushIfOpen();
    return { ...this.#outgoing.totals(), expiredSessions: this.#expiredSessions };
  }

  /** Queued messages and bytes of one client. */
  queueStats(clientId: string): QueueStats {
    this.#flushIfOpen();
    return this.#outgoing.queueStats(clientId);
  }

  /** Queued messages and bytes of every client with a non-empty queue (a copy). */
  allQueueStats(): Map<string, QueueStats> {
    this.#flushIfOpen();
    return this.#outgoing.allQueueStats();
  }

  /** Packets of queued rows held in memory until their PUBACK (outgoing-store.ts, "Row cache"). */
  cachedPackets(): number {
    return this.#outgoing.cachedRows;
  }

  /** When the client was last seen (ms), if it has a session. */
  sessionLastSeen(clientId: string): number | undefined {
    this.#writer.flush();
    return this.#sessions.lastSeen(clientId);
  }

  #flushIfOpen(): void {
    if (!this.#closed) this.#writer.flush();
  }
}

/** Opens (creating and migrating if needed) the broker database and returns the aedes persistence. */
export function createSqlitePersistence(opts: SqlitePersistenceOptions): SqlitePersistence {
  return new SqlitePersistence(opts);
}

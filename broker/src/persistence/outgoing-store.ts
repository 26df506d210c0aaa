/**
 * The outgoing queues of persistent sessions, on disk: one `outgoing` row per (client, message)
 * in queue order. The heap holds only two numbers per client with a non-empty queue (messages and
 * bytes, for caps and metrics), small bounded sets of recent cap drops, and the packet
 * identifiers of in-flight deliveries. All methods are synchronous and must run inside a `Writer`
 * transaction when they write.
 *
 * Packet identifiers. The identifier aedes assigns to a delivery of a queued PUBLISH
 * (`outgoingUpdate` for the same message) is kept in memory only (`#ids`), not written to the row:
 * it is losable by design, since a delivery whose identifier is lost (restart, or a failed
 * transaction) is simply sent again with a new one when the client reconnects (at-least-once;
 * the agent dedupes, I2). Identifiers that are part of the stored packet itself are on disk and
 * mirrored in `#ids` at open: a PUBREL that replaced a row, or a packet enqueued with one.
 *
 * Row cache. A PUBACK deletes the row and must give aedes back the packet it held; reading it
 * (`DELETE ... RETURNING` copies both BLOBs into new Buffers, then the meta is decoded) cost about
 * as much as the rest of the row's life in the broker's CPU profile (ADR 0008). A message queued
 * for a connected client is normally acknowledged within milliseconds, so the packet of such a row
 * (as enqueued, or as the queue stream read it) is kept in `#rows` by `seq` until `clear` deletes
 * the row without reading it. An entry is exactly the row's content: only `replace` and deletes
 * change or remove a row, and each removes the entry; a resync (failed transaction: a rolled-back
 * insert's `seq` may be given to another row) empties the cache. Bounded (`MAX_CACHED_ROWS` and
 * `MAX_CACHED_BYTES`, oldest out); rows of offline clients are not cached (their queues stay on
 * disk only); a miss reads the row as before. The cache only saves a read: what is committed, and
 * when, is unchanged.
 */
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { decodePacket, type EncodedPacket } from './packet-codec.js';
import type { PacketLike, QueueDropEvent, QueueLimits, QueueStats } from './types.js';
import type { Writer } from './writer.js';

interface Row {
  seq: number;
  message_id: number | null;
  bytes: number;
  meta: Buffer;
  payload: Buffer | null;
  payload_text: number;
}

/** A row found by `outgoingUpdate`'s rules; `sameBroker` (1) means only its packet identifier changes. */
export interface UpdateTarget {
  seq: number;
  bytes: number;
  sameBroker: 0 | 1;
}

/** How many recent cap drops are remembered so that the live delivery of one is not an error. */
const DROPPED_MEMORY = 4096;

/** In-memory packet identifiers kept at most; beyond, the oldest unpersisted one is forgotten. */
const MAX_IDS = 200_000;

/** Rows whose packet is kept in memory at most (see "Row cache"). */
export const MAX_CACHED_ROWS = 4096;

/** Topic + payload bytes of cached packets at most. */
const MAX_CACHED_BYTES = 4 * 1024 * 1024;

/** A cached row: its client, its packet (never handed out itself: `clear` returns a copy), its size. */
interface CachedRow {
  clientId: string;
  packet: PacketLike;
  bytes: number;
}

/**
 * The packet as the cache keeps it: a payload that is a view into a larger buffer (the socket read
 * it was parsed from) is copied, so the cache never pins more memory than it counts.
 */
function ownPayload(packet: PacketLike): PacketLike {
  const p = packet.payload;
  if (!(p instanceof Uint8Array) || p.buffer.byteLength <= Math.max(p.byteLength, Buffer.poolSize)) {
    return packet;
  }
  return { ...packet, payload: Buffer.from(p) };
}

/** The packet identifier of one row (by `seq`), as `outgoingUpdate`/`clear` look it up. */
interface IdEntry {
  clientId: string;
  messageId: number;
  /** The row's broker_id. */
  brokerId: string | null;
  bytes: number;
  /** Also in the row's message_id column (a PUBREL, or a packet enqueued with an identifier). */
  persisted: boolean;
}

function rowToPacket(row: Pick<Row, 'message_id' | 'meta' | 'payload' | 'payload_text'>): PacketLike {
  const packet = decodePacket(row.meta, row.payload, row.payload_text);
  if (row.message_id !== null) packet.messageId = row.message_id;
  else if (Object.hasOwn(packet, 'messageId')) packet.messageId = undefined;
  return packet;
}

function dropKey(clientId: string, brokerId: unknown, brokerCounter: unknown): string {
  return `${clientId}\u0000${String(brokerId)}\u0000${String(brokerCounter)}`;
}

export class OutgoingStore {
  readonly #writer: Writer;
  readonly #log: Logger | undefined;
  readonly #limits: QueueLimits;
  readonly #onDrop: ((event: QueueDropEvent) => void) | undefined;
  readonly #onFirstMessage: (clientId: string) => void;
  readonly #isConnected: (clientId: string) => boolean;
  /** Packets of recent rows of connected clients, by seq (see "Row cache"). */
  readonly #rows = new Map<number, CachedRow>();
  #cachedBytes = 0;
  readonly #stats = new Map<string, QueueStats>();
  readonly #recentDrops = new Set<string>();
  /** Clients currently refusing messages, so the log says so once per episode, not per message. */
  readonly #dropping = new Set<string>();
  #droppedMessages = 0;
  #droppedBytes = 0;
  /** Packet identifiers by row (insertion order: oldest first, for the cap). */
  readonly #ids = new Map<number, IdEntry>();
  /** Rows by client and packet identifier, each list in queue order. */
  readonly #idIndex = new Map<string, Map<number, number[]>>();

  readonly #insert: Database.Statement<
    [string, string | null, number | null, number | null, number, Buffer, Buffer | null, number]
  >;
  readonly #findSameBroker: Database.Statement<[string, string | null, number | null], UpdateTarget>;
  readonly #findUnassigned: Database.Statement<[string, string | null], UpdateTarget>;
  readonly #setMessageId: Database.Statement<[number | null, number]>;
  readonly #replace: Database.Statement<
    [string | null, number | null, number | null, number, Buffer, Buffer | null, number, number]
  >;
  readonly #clear: Database.Statement<[number, string], Pick<Row, 'meta' | 'payload' | 'payload_text'>>;
  readonly #delete: Database.Statement<[number, string]>;
  readonly #loadIds: Database.Statement<
    [],
    { seq: number; client_id: string; message_id: number; broker_id: string | null; bytes: number }
  >;
  readonly #page: Database.Statement<[string, number, number, number], Row>;
  readonly #maxSeq: Database.Statement<[string], { m: number | null }>;
  readonly #deleteClient: Database.Statement<[string]>;
  readonly #loadStats: Database.Statement<[], { client_id: string; messages: number; bytes: number }>;

  constructor(opts: {
    db: Database.Database;
    writer: Writer;
    log: Logger | undefined;
    limits: QueueLimits | undefined;
    onDrop: ((event: QueueDropEvent) => void) | undefined;
    onFirstMessage: (clientId: string) => void;
    /** Is the client connected now? (its rows are cached: see "Row cache") */
    isConnected?: (clientId: string) => boolean;
  }) {
    const { db } = opts;
    this.#writer = opts.writer;
    this.#log = opts.log;
    this.#limits = opts.limits ?? {};
    this.#onDrop = opts.onDrop;
    this.#onFirstMessage = opts.onFirstMessage;
    this.#isConnected = opts.isConnected ?? (() => false);
    this.#insert = db.prepare(
      `INSERT INTO outgoing (client_id, broker_id, broker_counter, message_id, bytes, meta, payload, payload_text)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#findSameBroker = db.prepare(
      `SELECT seq, bytes, 1 AS sameBroker FROM outgoing
       WHERE client_id = ? AND broker_id IS ? AND broker_counter IS ? ORDER BY seq LIMIT 1`,
    );
    this.#findUnassigned = db.prepare(
      `SELECT seq, bytes, 0 AS sameBroker FROM outgoing
       WHERE client_id = ? AND message_id IS NULL AND broker_id IS NOT ? ORDER BY seq`,
    );
    this.#setMessageId = db.prepare('UPDATE outgoing SET message_id = ? WHERE seq = ?');
    this.#replace = db.prepare(
      `UPDATE outgoing SET broker_id = ?, broker_counter = ?, message_id = ?, bytes = ?, meta = ?,
       payload = ?, payload_text = ? WHERE seq = ?`,
    );
    this.#clear = db.prepare(
      'DELETE FROM outgoing WHERE seq = ? AND client_id = ? RETURNING meta, payload, payload_text',
    );
    this.#delete = db.prepare('DELETE FROM outgoing WHERE seq = ? AND client_id = ?');
    this.#loadIds = db.prepare(
      `SELECT seq, client_id, message_id, broker_id, bytes FROM outgoing
       WHERE message_id IS NOT NULL ORDER BY seq`,
    );
    this.#page = db.prepare(
      `SELECT seq, message_id, bytes, meta, payload, payload_text FROM outgoing
       WHERE client_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
    );
    this.#maxSeq = db.prepare('SELECT MAX(seq) AS m FROM outgoing WHERE client_id = ?');
    this.#deleteClient = db.prepare('DELETE FROM outgoing WHERE client_id = ?');
    this.#loadStats = db.prepare(
      'SELECT client_id, COUNT(*) AS messages, SUM(bytes) AS bytes FROM outgoing GROUP BY client_id',
    );
    this.reloadStats();
    this.#writer.onResync(() => this.reloadStats());
  }

  /**
   * Rebuilds the per-client counters and the packet identifiers from disk (at open, and after a
   * failed transaction, which also forgets the in-memory identifiers: their rows may be gone).
   */
  reloadStats(): void {
    this.#rows.clear();
    this.#cachedBytes = 0;
    this.#stats.clear();
    for (const row of this.#loadStats.all()) {
      this.#stats.set(row.client_id, { messages: row.messages, bytes: row.bytes });
    }
    this.#ids.clear();
    this.#idIndex.clear();
    for (const row of this.#loadIds.all()) {
      this.#addId(row.seq, {
        clientId: row.client_id,
        messageId: row.message_id,
        brokerId: row.broker_id,
        bytes: row.bytes,
        persisted: true,
      });
    }
  }

  #addId(seq: number, entry: IdEntry): void {
    this.#removeId(seq);
    this.#ids.set(seq, entry);
    let byId = this.#idIndex.get(entry.clientId);
    if (byId === undefined) {
      byId = new Map();
      this.#idIndex.set(entry.clientId, byId);
    }
    const seqs = byId.get(entry.messageId);
    if (seqs === undefined) byId.set(entry.messageId, [seq]);
    else {
      let i = seqs.length;
      while (i > 0 && (seqs[i - 1] as number) > seq) i--;
      seqs.splice(i, 0, seq);
    }
    if (this.#ids.size > MAX_IDS) {
      for (const [oldSeq, old] of this.#ids) {
        if (!old.persisted) {
          this.#removeId(oldSeq);
          break;
        }
      }
    }
  }

  #removeId(seq: number): IdEntry | undefined {
    const entry = this.#ids.get(seq);
    if (entry === undefined) return undefined;
    this.#ids.delete(seq);
    const byId = this.#idIndex.get(entry.clientId);
    const seqs = byId?.get(entry.messageId);
    if (byId !== undefined && seqs !== undefined) {
      const i = seqs.indexOf(seq);
      if (i >= 0) seqs.splice(i, 1);
      if (seqs.length === 0) byId.delete(entry.messageId);
      if (byId.size === 0) this.#idIndex.delete(entry.clientId);
    }
    return entry;
  }

  /**
   * Appends one message to the queue of each client, refusing it for a client whose cap it would
   * exceed. The caller has deduplicated `clientIds` and opened a durable transaction.
   */
  enqueue(clientIds: Iterable<string>, packet: PacketLike, encoded: EncodedPacket): void {
    const brokerId = typeof packet.brokerId === 'string' ? packet.brokerId : null;
    const brokerCounter = typeof packet.brokerCounter === 'number' ? packet.brokerCounter : null;
    const messageId = typeof packet.messageId === 'number' ? packet.messageId : null;
    const { maxMessages, maxBytes } = this.#limits;
    let cached: PacketLike | undefined;
    for (const clientId of clientIds) {
      let stats = this.#stats.get(clientId);
      const messages = stats?.messages ?? 0;
      const bytes = stats?.bytes ?? 0;
      let reason: QueueDropEvent['reason'] | undefined;
      if (maxMessages !== undefined && messages + 1 > maxMessages) reason = 'max-messages';
      else if (maxBytes !== undefined && bytes + encoded.bytes > maxBytes) reason = 'max-bytes';
      if (reason !== undefined) {
        this.#recordDrop({
          clientId,
          topic: String(packet.topic),
          bytes: encoded.bytes,
          reason,
          queuedMessages: messages,
          queuedBytes: bytes,
        });
        this.#rememberDrop(dropKey(clientId, brokerId, brokerCounter));
        continue;
      }
      const { lastInsertRowid } = this.#insert.run(
        clientId,
        brokerId,
        brokerCounter,
        messageId,
        encoded.bytes,
        encoded.meta,
        encoded.payload,
        encoded.payloadText,
      );
      const seq = Number(lastInsertRowid);
      if (this.#isConnected(clientId)) {
        cached ??= ownPayload(packet);
        this.#cacheRow(seq, clientId, cached, encoded.bytes);
      }
      if (messageId !== null) {
        this.#addId(seq, {
          clientId,
          messageId,
          brokerId,
          bytes: encoded.bytes,
          persisted: true,
        });
      }
      if (stats === undefined) {
        stats = { messages: 0, bytes: 0 };
        this.#stats.set(clientId, stats);
        this.#onFirstMessage(clientId);
      }
      stats.messages++;
      stats.bytes += encoded.bytes;
      this.#dropping.delete(clientId);
    }
  }

  #cacheRow(seq: number, clientId: string, packet: PacketLike, bytes: number): void {
    this.#uncache(seq);
    this.#rows.set(seq, { clientId, packet, bytes });
    this.#cachedBytes += bytes;
    while (this.#rows.size > MAX_CACHED_ROWS || this.#cachedBytes > MAX_CACHED_BYTES) {
      const oldest = this.#rows.keys().next();
      if (oldest.done === true) break;
      this.#uncache(oldest.value);
    }
  }

  #uncache(seq: number): CachedRow | undefined {
    const row = this.#rows.get(seq);
    if (row === undefined) return undefined;
    this.#rows.delete(seq);
    this.#cachedBytes -= row.bytes;
    return row;
  }

  /** Rows whose packet is cached now (tests). */
  get cachedRows(): number {
    return this.#rows.size;
  }

  #recordDrop(event: QueueDropEvent): void {
    this.#writer.afterCommit(() => {
      this.#droppedMessages++;
      this.#droppedBytes += event.bytes;
      if (!this.#dropping.has(event.clientId)) {
        this.#dropping.add(event.clientId);
        this.#log?.warn({ ...event }, 'outgoing queue full: dropping new messages for this client');
      }
      try {
        this.#onDrop?.(event);
      } catch (err) {
        this.#log?.error({ err, clientId: event.clientId }, 'onDrop hook threw');
      }
    });
  }

  #rememberDrop(key: string): void {
    this.#recentDrops.add(key);
    if (this.#recentDrops.size > DROPPED_MEMORY) {
      const oldest = this.#recentDrops.values().next();
      if (oldest.done !== true) this.#recentDrops.delete(oldest.value);
    }
  }

  /** Was this packet (by broker id and counter) recently refused by this client's cap? */
  wasDropped(clientId: string, packet: PacketLike): boolean {
    return this.#recentDrops.has(dropKey(clientId, packet.brokerId ?? null, packet.brokerCounter ?? null));
  }

  /**
   * The row `outgoingUpdate` addresses, by aedes' rules: the first row in queue order that is
   * either the same broker's same message (same brokerId and brokerCounter: only the packet
   * identifier changes), or, from another broker or none (a PUBREL), holds the same packet
   * identifier (the row is replaced by the packet).
   */
  findUpdateTarget(clientId: string, packet: PacketLike): UpdateTarget | undefined {
    const brokerId = packet.brokerId ?? null;
    const a = this.#findSameBroker.get(clientId, brokerId, packet.brokerCounter ?? null);
    const b = this.#findByMessageId(clientId, packet.messageId, brokerId);
    if (a === undefined) return b;
    if (b === undefined || a.seq < b.seq) return a;
    return b;
  }

  /** The first row of the client with this packet identifier (none: unassigned) and another broker. */
  #findByMessageId(clientId: string, messageId: unknown, brokerId: unknown): UpdateTarget | undefined {
    if (typeof messageId === 'number') {
      const seqs = this.#idIndex.get(clientId)?.get(messageId);
      if (seqs === undefined) return undefined;
      for (const seq of seqs) {
        const entry = this.#ids.get(seq) as IdEntry;
        if (entry.brokerId !== brokerId) return { seq, bytes: entry.bytes, sameBroker: 0 };
      }
      return undefined;
    }
    if (messageId !== undefined && messageId !== null) return undefined;
    for (const row of this.#findUnassigned.iterate(
      clientId,
      typeof brokerId === 'string' ? brokerId : null,
    )) {
      if (!this.#ids.has(row.seq)) return row;
    }
    return undefined;
  }

  /**
   * Records the packet identifier of a delivery of row `target` (found with `sameBroker` for
   * `packet`): in memory only, unless the row already holds one on disk.
   */
  setMessageId(clientId: string, target: UpdateTarget, packet: PacketLike): void {
    const messageId = typeof packet.messageId === 'number' ? packet.messageId : null;
    const old = this.#removeId(target.seq);
    const persisted = old?.persisted === true;
    if (persisted) this.#setMessageId.run(messageId, target.seq);
    if (messageId === null) return;
    this.#addId(target.seq, {
      clientId,
      messageId,
      brokerId: typeof packet.brokerId === 'string' ? packet.brokerId : null,
      bytes: target.bytes,
      persisted,
    });
  }

  replace(clientId: string, target: UpdateTarget, packet: PacketLike, encoded: EncodedPacket): void {
    this.#replace.run(
      packet.brokerId ?? null,
      packet.brokerCounter ?? null,
      packet.messageId ?? null,
      encoded.bytes,
      encoded.meta,
      encoded.payload,
      encoded.payloadText,
      target.seq,
    );
    this.#uncache(target.seq);
    this.#removeId(target.seq);
    if (typeof packet.messageId === 'number') {
      this.#addId(target.seq, {
        clientId,
        messageId: packet.messageId,
        brokerId: typeof packet.brokerId === 'string' ? packet.brokerId : null,
        bytes: encoded.bytes,
        persisted: true,
      });
    }
    const stats = this.#stats.get(clientId);
    if (stats !== undefined) stats.bytes += encoded.bytes - target.bytes;
  }

  /** Removes the first queued row with this packet identifier and returns its packet. */
  clear(clientId: string, messageId: number): PacketLike | undefined {
    for (;;) {
      const seq = this.#idIndex.get(clientId)?.get(messageId)?.[0];
      if (seq === undefined) return undefined;
      const entry = this.#removeId(seq) as IdEntry;
      let packet: PacketLike;
      const cached = this.#uncache(seq);
      if (cached !== undefined && cached.clientId === clientId) {
        if (this.#delete.run(seq, clientId).changes === 0) continue; // a stale identifier
        packet = { ...cached.packet, messageId };
      } else {
        const row = this.#clear.get(seq, clientId);
        if (row === undefined) continue; // the row is gone: a stale identifier
        packet = rowToPacket({ ...row, message_id: messageId });
      }
      const stats = this.#stats.get(clientId);
      if (stats !== undefined) {
        stats.messages--;
        stats.bytes -= entry.bytes;
        if (stats.messages <= 0) this.#stats.delete(clientId);
      }
      this.#dropping.delete(clientId);
      return packet;
    }
  }

  /** Deletes a client's whole queue; returns how many messages it held. */
  deleteClient(clientId: string): number {
    const { changes } = this.#deleteClient.run(clientId);
    if (this.#rows.size > 0) {
      for (const [seq, row] of this.#rows) if (row.clientId === clientId) this.#uncache(seq);
    }
    const byId = this.#idIndex.get(clientId);
    if (byId !== undefined) {
      for (const seqs of [...byId.values()]) for (const seq of [...seqs]) this.#removeId(seq);
    }
    this.#stats.delete(clientId);
    this.#dropping.delete(clientId);
    return changes;
  }

  /** The queue's current last position: a stream created now ends there (a snapshot). */
  lastSeq(clientId: string): number {
    return this.#maxSeq.get(clientId)?.m ?? 0;
  }

  /**
   * The queue of a client from `afterSeq` (exclusive) to `untilSeq` (inclusive), read lazily a
   * page at a time, so a long queue is never in the heap at once; rows cleared or replaced while
   * the stream is open are seen as they are now.
   */
  *stream(clientId: string, untilSeq: number, pageSize = 64): Generator<PacketLike> {
    let after = 0;
    for (;;) {
      const rows = this.#page.all(clientId, after, untilSeq, pageSize);
      const cache = this.#isConnected(clientId);
      for (const row of rows) {
        after = row.seq;
        const entry = this.#ids.get(row.seq);
        if (entry !== undefined) row.message_id = entry.messageId;
        const packet = rowToPacket(row);
        if (cache) this.#cacheRow(row.seq, clientId, { ...packet }, row.bytes);
        yield packet;
      }
      if (rows.length < pageSize) return;
    }
  }

  queueStats(clientId: string): QueueStats {
    const s = this.#stats.get(clientId);
    return { messages: s?.messages ?? 0, bytes: s?.bytes ?? 0 };
  }

  allQueueStats(): Map<string, QueueStats> {
    const out = new Map<string, QueueStats>();
    for (const [id, s] of this.#stats) out.set(id, { messages: s.messages, bytes: s.bytes });
    return out;
  }

  totals(): {
    clients: number;
    messages: number;
    bytes: number;
    droppedMessages: number;
    droppedBytes: number;
  } {
    let messages = 0;
    let bytes = 0;
    for (const s of this.#stats.values()) {
      messages += s.messages;
      bytes += s.bytes;
    }
    return {
      clients: this.#stats.size,
      messages,
      bytes,
      droppedMessages: this.#droppedMessages,
      droppedBytes: this.#droppedBytes,
    };
  }
}

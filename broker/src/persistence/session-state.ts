/**
 * Per-client state other than subscriptions and queues: session bookkeeping for expiry (I8),
 * inbound QoS 2 packets awaiting PUBREL, and last wills. Synchronous; writes run inside a `Writer`
 * transaction opened by the caller.
 */
import type Database from 'better-sqlite3';
import { decodePacket, type EncodedPacket } from './packet-codec.js';
import type { PacketLike } from './types.js';

interface PacketRow {
  meta: Buffer;
  payload: Buffer | null;
  payload_text: number;
}

export class SessionTable {
  readonly #upsert: Database.Statement<[string, number]>;
  readonly #ensure: Database.Statement<[string, number]>;
  readonly #touch: Database.Statement<[number, string]>;
  readonly #delete: Database.Statement<[string]>;
  readonly #idleSince: Database.Statement<[number], string>;
  readonly #lastSeen: Database.Statement<[string], number>;

  constructor(db: Database.Database) {
    this.#upsert = db.prepare(
      `INSERT INTO sessions (client_id, last_seen) VALUES (?, ?)
       ON CONFLICT (client_id) DO UPDATE SET last_seen = excluded.last_seen`,
    );
    this.#ensure = db.prepare('INSERT OR IGNORE INTO sessions (client_id, last_seen) VALUES (?, ?)');
    this.#touch = db.prepare('UPDATE sessions SET last_seen = ? WHERE client_id = ?');
    this.#delete = db.prepare('DELETE FROM sessions WHERE client_id = ?');
    this.#idleSince = db.prepare<[number], string>(
      'SELECT client_id FROM sessions WHERE last_seen < ? ORDER BY last_seen',
    );
    this.#idleSince.pluck();
    this.#lastSeen = db.prepare<[string], number>('SELECT last_seen FROM sessions WHERE client_id = ?');
    this.#lastSeen.pluck();
  }

  /** The client was seen now: create or refresh its session. */
  upsert(clientId: string, now: number): void {
    this.#upsert.run(clientId, now);
  }

  /** Make sure a session row exists (state was stored for it) without refreshing it. */
  ensure(clientId: string, now: number): void {
    this.#ensure.run(clientId, now);
  }

  /** Refresh an existing session only (clean clients have none). */
  touch(clientId: string, now: number): void {
    this.#touch.run(now, clientId);
  }

  delete(clientId: string): void {
    this.#delete.run(clientId);
  }

  /** Sessions not seen since `cutoff`, oldest first. */
  idleSince(cutoff: number): string[] {
    return this.#idleSince.all(cutoff);
  }

  lastSeen(clientId: string): number | undefined {
    return this.#lastSeen.get(clientId);
  }
}

export class IncomingTable {
  readonly #upsert: Database.Statement<[string, number, Buffer, Buffer | null, number]>;
  readonly #get: Database.Statement<[string, number], PacketRow>;
  readonly #delete: Database.Statement<[string, number]>;
  readonly #deleteClient: Database.Statement<[string]>;

  constructor(db: Database.Database) {
    this.#upsert = db.prepare(
      `INSERT INTO incoming (client_id, message_id, meta, payload, payload_text) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (client_id, message_id) DO UPDATE SET meta = excluded.meta, payload = excluded.payload,
       payload_text = excluded.payload_text`,
    );
    this.#get = db.prepare(
      'SELECT meta, payload, payload_text FROM incoming WHERE client_id = ? AND message_id = ?',
    );
    this.#delete = db.prepare('DELETE FROM incoming WHERE client_id = ? AND message_id = ?');
    this.#deleteClient = db.prepare('DELETE FROM incoming WHERE client_id = ?');
  }

  store(clientId: string, messageId: number, e: EncodedPacket): void {
    this.#upsert.run(clientId, messageId, e.meta, e.payload, e.payloadText);
  }

  get(clientId: string, messageId: number): PacketLike | undefined {
    const row = this.#get.get(clientId, messageId);
    return row === undefined ? undefined : decodePacket(row.meta, row.payload, row.payload_text);
  }

  /** Returns whether a packet was deleted. */
  delete(clientId: string, messageId: number): boolean {
    return this.#delete.run(clientId, messageId).changes > 0;
  }

  deleteClient(clientId: string): number {
    return this.#deleteClient.run(clientId).changes;
  }
}

export class WillTable {
  readonly #upsert: Database.Statement<[string, string | null, Buffer, Buffer | null, number]>;
  readonly #get: Database.Statement<[string], PacketRow>;
  readonly #delete: Database.Statement<[string]>;
  readonly #page: Database.Statement<
    [string, number],
    PacketRow & { client_id: string; broker_id: string | null }
  >;

  constructor(db: Database.Database) {
    this.#upsert = db.prepare(
      `INSERT INTO wills (client_id, broker_id, meta, payload, payload_text) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (client_id) DO UPDATE SET broker_id = excluded.broker_id, meta = excluded.meta,
       payload = excluded.payload, payload_text = excluded.payload_text`,
    );
    this.#get = db.prepare('SELECT meta, payload, payload_text FROM wills WHERE client_id = ?');
    this.#delete = db.prepare('DELETE FROM wills WHERE client_id = ?');
    this.#page = db.prepare(
      `SELECT client_id, broker_id, meta, payload, payload_text FROM wills
       WHERE client_id > ? ORDER BY client_id LIMIT ?`,
    );
  }

  put(clientId: string, brokerId: string | null, e: EncodedPacket): void {
    this.#upsert.run(clientId, brokerId, e.meta, e.payload, e.payloadText);
  }

  get(clientId: string): PacketLike | undefined {
    const row = this.#get.get(clientId);
    return row === undefined ? undefined : decodePacket(row.meta, row.payload, row.payload_text);
  }

  delete(clientId: string): void {
    this.#delete.run(clientId);
  }

  /** Wills held by brokers not in `alive`, read a page at a time. */
  *orphans(alive: Readonly<Record<string, unknown>>, pageSize = 64): Generator<PacketLike> {
    let after = '';
    for (;;) {
      const rows = this.#page.all(after, pageSize);
      for (const row of rows) {
        after = row.client_id;
        if (row.broker_id !== null && Object.hasOwn(alive, row.broker_id) && alive[row.broker_id]) continue;
        yield decodePacket(row.meta, row.payload, row.payload_text);
      }
      if (rows.length < pageSize) return;
    }
  }
}

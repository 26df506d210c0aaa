/**
 * Retained messages, one per topic, in a table ordered by topic: a filter whose leading levels
 * are literal is answered by a range scan over those levels, then matched level by level; a
 * filter that starts with a wildcard scans the table. Either way rows are read a page at a time.
 */
import type Database from 'better-sqlite3';
import { decodePacket, encodePacket } from './packet-codec.js';
import { literalPrefix, matchTopic } from './topic-match.js';
import type { PacketLike } from './types.js';

interface Row {
  topic: string;
  meta: Buffer;
  payload: Buffer | null;
  payload_text: number;
}

const PAGE = 64;

export class RetainedStore {
  readonly #upsert: Database.Statement<[string, Buffer, Buffer | null, number]>;
  readonly #delete: Database.Statement<[string]>;
  readonly #get: Database.Statement<[string], Row>;
  readonly #rangeFirst: Database.Statement<[string, string, number], Row>;
  readonly #rangeNext: Database.Statement<[string, string, number], Row>;
  readonly #scan: Database.Statement<[string, number], Row>;

  constructor(db: Database.Database) {
    this.#upsert = db.prepare(
      `INSERT INTO retained (topic, meta, payload, payload_text) VALUES (?, ?, ?, ?)
       ON CONFLICT (topic) DO UPDATE SET meta = excluded.meta, payload = excluded.payload,
       payload_text = excluded.payload_text`,
    );
    this.#delete = db.prepare('DELETE FROM retained WHERE topic = ?');
    const cols = 'topic, meta, payload, payload_text';
    this.#get = db.prepare(`SELECT ${cols} FROM retained WHERE topic = ?`);
    this.#rangeFirst = db.prepare(
      `SELECT ${cols} FROM retained WHERE topic >= ? AND topic < ? ORDER BY topic LIMIT ?`,
    );
    this.#rangeNext = db.prepare(
      `SELECT ${cols} FROM retained WHERE topic > ? AND topic < ? ORDER BY topic LIMIT ?`,
    );
    this.#scan = db.prepare(`SELECT ${cols} FROM retained WHERE topic > ? ORDER BY topic LIMIT ?`);
  }

  /** Stores a copy of every own property; an empty payload deletes the topic's retained message. */
  store(packet: PacketLike): void {
    const topic = String(packet.topic);
    const payload = packet.payload;
    if (payload === undefined || payload === null || payload.length === 0) {
      this.#delete.run(topic);
      return;
    }
    const e = encodePacket(packet);
    this.#upsert.run(topic, e.meta, e.payload, e.payloadText);
  }

  /** Retained messages matching any of the filters, each topic once, read lazily. */
  *match(filters: readonly string[]): Generator<PacketLike> {
    const seen = filters.length > 1 ? new Set<string>() : undefined;
    for (const filter of filters) {
      for (const row of this.#candidates(filter)) {
        if (!matchTopic(filter, row.topic)) continue;
        if (seen !== undefined) {
          if (seen.has(row.topic)) continue;
          seen.add(row.topic);
        }
        yield decodePacket(row.meta, row.payload, row.payload_text);
      }
    }
  }

  *#candidates(filter: string): Generator<Row> {
    const { wildcard, prefix } = literalPrefix(filter);
    if (!wildcard) {
      const row = this.#get.get(filter);
      if (row !== undefined) yield row;
      return;
    }
    if (prefix === undefined) {
      let after = '';
      for (;;) {
        const rows = this.#scan.all(after, PAGE);
        for (const row of rows) yield row;
        const last = rows.at(-1);
        if (last === undefined || rows.length < PAGE) return;
        after = last.topic;
      }
    }
    // Every topic under `prefix` (and `prefix` itself, which `#` also matches) sorts in
    // [prefix, prefix + '0'): '/' (0x2F) is the byte just below '0' (0x30).
    const upper = `${prefix}0`;
    let rows = this.#rangeFirst.all(prefix, upper, PAGE);
    for (;;) {
      for (const row of rows) yield row;
      const last = rows.at(-1);
      if (last === undefined || rows.length < PAGE) return;
      rows = this.#rangeNext.all(last.topic, upper, PAGE);
    }
  }
}

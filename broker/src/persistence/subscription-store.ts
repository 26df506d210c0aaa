/**
 * Subscriptions of persistent (clean=false) sessions: on disk in `subscriptions`, and, for
 * QoS > 0 only, in a trie in the heap so that `subscriptionsByTopic` (called on every QoS > 0
 * publish) never touches the disk. The trie is rebuilt from the table at open and changed only
 * after the transaction that changed the table has committed.
 */
import type Database from 'better-sqlite3';
import { SubscriptionTrie } from './topic-match.js';
import type { SubscriptionIn, TopicSubscription } from './types.js';
import type { Writer } from './writer.js';

interface SubOptions {
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}

interface SubRow {
  client_id: string;
  topic: string;
  qos: number;
  options: string | null;
}

function optionsOf(sub: SubscriptionIn): SubOptions | undefined {
  const o: SubOptions = {};
  let any = false;
  if (sub.rh !== undefined) {
    o.rh = sub.rh;
    any = true;
  }
  if (sub.rap !== undefined) {
    o.rap = sub.rap;
    any = true;
  }
  if (sub.nl !== undefined) {
    o.nl = sub.nl;
    any = true;
  }
  if (sub.subscriptionIdentifier !== undefined) {
    o.subscriptionIdentifier = sub.subscriptionIdentifier;
    any = true;
  }
  return any ? o : undefined;
}

/** The trie value: what `subscriptionsByTopic` returns (no MQTT 5 subscription identifier). */
function entryOf(clientId: string, topic: string, qos: number, o: SubOptions | undefined): TopicSubscription {
  const e: TopicSubscription = { clientId, topic, qos };
  if (o?.rh !== undefined) e.rh = o.rh;
  if (o?.rap !== undefined) e.rap = o.rap;
  if (o?.nl !== undefined) e.nl = o.nl;
  return e;
}

function parseOptions(json: string | null): SubOptions | undefined {
  return json === null ? undefined : (JSON.parse(json) as SubOptions);
}

export class SubscriptionStore {
  readonly #writer: Writer;
  readonly #trie = new SubscriptionTrie<TopicSubscription>();
  readonly #upsert: Database.Statement<[string, string, number, string | null]>;
  readonly #delete: Database.Statement<[string, string]>;
  readonly #byClient: Database.Statement<[string], SubRow>;
  readonly #deleteClient: Database.Statement<[string], { topic: string; qos: number }>;
  readonly #countClients: Database.Statement<[], { n: number }>;
  readonly #clientsByTopic: Database.Statement<
    [string, number, number],
    { rowid: number; client_id: string }
  >;

  constructor(db: Database.Database, writer: Writer) {
    this.#writer = writer;
    this.#upsert = db.prepare(
      `INSERT INTO subscriptions (client_id, topic, qos, options) VALUES (?, ?, ?, ?)
       ON CONFLICT (client_id, topic) DO UPDATE SET qos = excluded.qos, options = excluded.options`,
    );
    this.#delete = db.prepare('DELETE FROM subscriptions WHERE client_id = ? AND topic = ?');
    this.#byClient = db.prepare(
      'SELECT client_id, topic, qos, options FROM subscriptions WHERE client_id = ? ORDER BY rowid',
    );
    this.#deleteClient = db.prepare('DELETE FROM subscriptions WHERE client_id = ? RETURNING topic, qos');
    this.#countClients = db.prepare('SELECT COUNT(DISTINCT client_id) AS n FROM subscriptions');
    this.#clientsByTopic = db.prepare(
      'SELECT rowid, client_id FROM subscriptions WHERE topic = ? AND rowid > ? ORDER BY rowid LIMIT ?',
    );
    const load = db.prepare<[], SubRow>(
      'SELECT client_id, topic, qos, options FROM subscriptions WHERE qos > 0 ORDER BY rowid',
    );
    for (const row of load.iterate()) {
      this.#trie.set(
        row.topic,
        row.client_id,
        entryOf(row.client_id, row.topic, row.qos, parseOptions(row.options)),
      );
    }
  }

  /** Adds or replaces subscriptions (the last entry for a filter wins). Call inside a transaction. */
  add(clientId: string, subs: readonly SubscriptionIn[]): void {
    const last = new Map<string, SubscriptionIn>();
    for (const sub of subs) last.set(sub.topic, sub);
    for (const sub of last.values()) {
      const o = optionsOf(sub);
      this.#upsert.run(clientId, sub.topic, sub.qos, o === undefined ? null : JSON.stringify(o));
      this.#writer.afterCommit(() => {
        if (sub.qos > 0) this.#trie.set(sub.topic, clientId, entryOf(clientId, sub.topic, sub.qos, o));
        else this.#trie.delete(sub.topic, clientId);
      });
    }
  }

  /** Removes subscriptions by filter. Call inside a transaction. */
  remove(clientId: string, topics: readonly string[]): void {
    for (const topic of topics) {
      if (this.#delete.run(clientId, topic).changes > 0) {
        this.#writer.afterCommit(() => this.#trie.delete(topic, clientId));
      }
    }
  }

  /** Removes every subscription of a client; returns how many. Call inside a transaction. */
  removeClient(clientId: string): number {
    const rows = this.#deleteClient.all(clientId);
    this.#writer.afterCommit(() => {
      for (const row of rows) if (row.qos > 0) this.#trie.delete(row.topic, clientId);
    });
    return rows.length;
  }

  /** A client's subscriptions in the order they were first made, with their stored options. */
  byClient(clientId: string): Array<SubscriptionIn> {
    return this.#byClient
      .all(clientId)
      .map((row) => ({ topic: row.topic, qos: row.qos, ...parseOptions(row.options) }));
  }

  /** QoS > 0 subscriptions whose filter matches the topic (copies; from the heap only). */
  match(topic: string): TopicSubscription[] {
    const found = this.#trie.match(topic);
    const out: TopicSubscription[] = new Array(found.length);
    for (let i = 0; i < found.length; i++) out[i] = { ...(found[i] as TopicSubscription) };
    return out;
  }

  /** Number of QoS > 0 subscriptions and of clients with any subscription. */
  counts(): { subsCount: number; clientsCount: number } {
    return { subsCount: this.#trie.size, clientsCount: this.#countClients.get()?.n ?? 0 };
  }

  /** Ids of clients subscribed with exactly this filter, read a page at a time. */
  *clientsByTopic(topic: string, pageSize = 256): Generator<string> {
    let after = 0;
    for (;;) {
      const rows = this.#clientsByTopic.all(topic, after, pageSize);
      for (const row of rows) {
        after = row.rowid;
        yield row.client_id;
      }
      if (rows.length < pageSize) return;
    }
  }
}

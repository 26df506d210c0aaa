/**
 * Which aedes persistence the broker runs on, and the Outpost duties around it:
 *
 * - `sqlite` (default when `dataDir` is set): `<dataDir>/broker.db` through broker/src/persistence —
 *   durable before PUBACK (I5, via its `durableAuthorizePublish` wrapped around our ACL), per-client
 *   queue caps and session expiry (I8), queue stats for the metrics.
 * - `memory` (default without `dataDir`; development only): aedes-persistence's in-memory store.
 *   Nothing survives a restart, queues are unbounded and sessions never expire: a warning says so.
 * - an instance passed by the caller (tests): used as is, with its optional extensions detected.
 *
 * In every case only subscriptions the ACL grants are stored: aedes 1.2 stores the whole SUBSCRIBE
 * packet's list once any one filter is granted, so a refused filter would otherwise land in the
 * persistent session and have messages queued for it (they would still be refused at delivery by
 * authorizeForward, but they would fill the queue). The broker closes the persistence on close().
 */
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { AedesOptions } from 'aedes';
import type { Logger } from 'pino';
import type { BrokerConfig } from './config.js';
import { BrokerError } from './errors.js';
import type { BrokerMetrics, QueueSnapshot } from './metrics.js';
import { createSqlitePersistence } from './persistence/index.js';

type AuthorizePublish = NonNullable<AedesOptions['authorizePublish']>;

// aedes-persistence is CommonJS whose typings claim a default export; load module.exports itself.
const memoryPersistence = createRequire(import.meta.url)('aedes-persistence') as () => object;

/** What the broker may use of a persistence beyond the aedes interface (all optional). */
export interface PersistenceExtensions {
  durableAuthorizePublish?(inner: AuthorizePublish): AuthorizePublish;
  expireSessions?(now?: number): { sessions: number; messages: number; clientIds: string[] };
  stats?(): { messages: number; bytes: number };
  allQueueStats?(): Map<string, { messages: number; bytes: number }>;
  close?(): Promise<void>;
  destroy?(): unknown;
  addSubscriptions(
    client: { id: string },
    subs: ReadonlyArray<{ topic: string }>,
    ...rest: unknown[]
  ): unknown;
}

export type PersistenceOption = 'memory' | 'sqlite' | PersistenceExtensions;

export const DB_FILE = 'broker.db';

export interface BrokerStore {
  readonly kind: 'sqlite' | 'memory' | 'custom';
  /** What aedes is given. */
  readonly persistence: object;
  readonly wrapAuthorizePublish?: (inner: AuthorizePublish) => AuthorizePublish;
  /** Deletes abandoned sessions; undefined when the persistence cannot. */
  readonly expire?: () => { sessions: number; messages: number };
  readonly queues?: () => QueueSnapshot;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  readonly config: BrokerConfig;
  readonly log: Logger;
  readonly metrics: BrokerMetrics;
  readonly persistence?: PersistenceOption;
  /** May this client keep a subscription to this filter? (the ACL, via its identity) */
  readonly mayStore: (clientId: string, client: unknown, filter: string) => boolean;
}

function guardSubscriptions(p: PersistenceExtensions, mayStore: OpenStoreOptions['mayStore']): void {
  const original = p.addSubscriptions.bind(p);
  // An own property shadowing the method: works for classes with #private fields (bound to p).
  p.addSubscriptions = (client, subs, ...rest) =>
    original(
      client,
      subs.filter((s) => mayStore(client.id, client, s.topic)),
      ...rest,
    );
}

export function openStore(o: OpenStoreOptions): BrokerStore {
  const c = o.config;
  const choice = o.persistence ?? (c.dataDir ? 'sqlite' : 'memory');
  let p: PersistenceExtensions;
  let kind: BrokerStore['kind'];
  if (choice === 'sqlite') {
    if (!c.dataDir) throw new BrokerError('config', 'sqlite persistence needs dataDir (--data DIR)');
    try {
      mkdirSync(c.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new BrokerError('config', `cannot create ${c.dataDir}: ${(err as Error).message}`);
    }
    p = createSqlitePersistence({
      path: join(c.dataDir, DB_FILE),
      log: o.log,
      sessionExpiryMs: c.sessions.expiryMs,
      queueLimits: { maxMessages: c.queue.maxMessages, maxBytes: c.queue.maxBytes },
      onDrop: (e) => {
        o.metrics.queueDropped.inc({ client: e.clientId });
        o.metrics.reject('queue-full');
      },
    }) as unknown as PersistenceExtensions;
    kind = 'sqlite';
  } else if (choice === 'memory') {
    p = memoryPersistence() as unknown as PersistenceExtensions;
    kind = 'memory';
    o.log.warn(
      'in-memory persistence: sessions and queued messages do not survive a restart, queues are not ' +
        'capped and sessions never expire (set dataDir for the durable SQLite persistence)',
    );
  } else {
    p = choice;
    kind = 'custom';
  }
  guardSubscriptions(p, o.mayStore);

  const durable = p.durableAuthorizePublish?.bind(p);
  const expireFn = p.expireSessions?.bind(p);
  const statsFn = p.stats?.bind(p);
  const allFn = p.allQueueStats?.bind(p);
  let closed = false;
  return {
    kind,
    persistence: p,
    ...(durable && { wrapAuthorizePublish: (inner: AuthorizePublish) => durable(inner) }),
    ...(expireFn && {
      expire: () => {
        const r = expireFn();
        return { sessions: r.sessions, messages: r.messages };
      },
    }),
    ...(statsFn && {
      queues: (): QueueSnapshot => {
        const t = statsFn();
        const per = allFn ? [...allFn()].map(([clientId, q]) => ({ clientId, ...q })) : undefined;
        return { total: { messages: t.messages, bytes: t.bytes }, ...(per && { perClient: per }) };
      },
    }),
    async close() {
      if (closed) return;
      closed = true;
      if (typeof p.close === 'function') await p.close();
      // aedes-persistence's callback form waits for a 'ready' that the async setup() never emits:
      // call it without a callback, which returns its promise.
      else if (typeof p.destroy === 'function') await Promise.resolve(p.destroy()).catch(() => undefined);
    },
  };
}

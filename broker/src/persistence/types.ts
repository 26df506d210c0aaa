/**
 * Types shared by the SQLite persistence modules. aedes types its `persistence` option as `any`
 * and the aedes-persistence typings are callback-era, so the shapes aedes 1.x actually passes in
 * are described here, as loosely as aedes itself treats them.
 */
import type { AedesOptions } from 'aedes';
import type { Logger } from 'pino';
import type { WalSync } from './wal-sync.js';

/**
 * A packet as aedes hands it to the persistence: an aedes-packet `Packet`, an mqtt-packet
 * `PUBLISH`/`PUBREL`, or a will. Any own property is preserved on a round trip (functions
 * excepted), which is what the abstract suite checks.
 */
export interface PacketLike {
  cmd?: string;
  topic?: string;
  payload?: Buffer | Uint8Array | string;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  messageId?: number;
  brokerId?: string;
  brokerCounter?: number;
  clientId?: string;
  [key: string]: unknown;
}

/** The part of an aedes `Client` the persistence reads. */
export interface ClientRef {
  readonly id: string;
}

/** One entry of a SUBSCRIBE packet (MQTT 3.1.1 fields plus the MQTT 5 options aedes passes through). */
export interface SubscriptionIn {
  topic: string;
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}

/** What `subscriptionsByTopic` returns: one offline (clean=false) subscription matching a topic. */
export interface TopicSubscription {
  clientId: string;
  topic: string;
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
}

/**
 * The part of the aedes broker the persistence uses. `counter` is aedes' internal packet counter
 * (`brokerCounter`), read and advanced only by {@link SqlitePersistence.durableAuthorizePublish}.
 */
export interface BrokerRef {
  id: string;
  counter?: number;
  on?(
    event: 'client' | 'clientDisconnect',
    listener: (client: { id: string; clean?: boolean }) => void,
  ): unknown;
  removeListener?(
    event: 'client' | 'clientDisconnect',
    listener: (client: { id: string; clean?: boolean }) => void,
  ): unknown;
}

/** aedes' `authorizePublish` hook (client is null for wills the broker publishes itself). */
export type AuthorizePublish = NonNullable<AedesOptions['authorizePublish']>;

/** Per-client bound on the outgoing queue of a persistent session (DESIGN I8). */
export interface QueueLimits {
  /** Most messages queued for one client; further messages are dropped. Unbounded if unset. */
  maxMessages?: number;
  /** Most bytes (topic + payload) queued for one client; further messages are dropped. */
  maxBytes?: number;
}

/** Reported through `onDrop` and the log each time a message is refused by a queue cap. */
export interface QueueDropEvent {
  clientId: string;
  topic: string;
  bytes: number;
  reason: 'max-messages' | 'max-bytes';
  queuedMessages: number;
  queuedBytes: number;
}

export interface SqlitePersistenceOptions {
  /** SQLite file; created with its folder's existing permissions. One broker process per file. */
  path: string;
  /** pino logger; a child `{ component: 'broker.persistence' }` is derived. Silent if absent. */
  log?: Logger;
  /** A session whose client has not been connected for this long is abandoned. Default 30 days. */
  sessionExpiryMs?: number;
  /** Per-client outgoing queue caps. Unbounded if absent. */
  queueLimits?: QueueLimits;
  /** Called synchronously for every message a queue cap refuses (for a per-site metric). */
  onDrop?: (event: QueueDropEvent) => void;
  /** Clock for session bookkeeping; defaults to `Date.now`. */
  now?: () => number;
  /**
   * How durable commits reach the disk: 'async' (default for a file in WAL mode) commits with
   * synchronous=NORMAL and settles after an fdatasync of the WAL on the libuv pool (wal-sync.ts);
   * 'full' commits with synchronous=FULL, syncing inside COMMIT on the event loop. A `WalSync` object
   * replaces the file sync (tests).
   */
  walSync?: 'async' | 'full' | WalSync;
}

export interface QueueStats {
  messages: number;
  bytes: number;
}

export interface PersistenceStats {
  /** Clients with at least one queued message. */
  clients: number;
  /** Messages queued for all clients. */
  messages: number;
  /** Bytes (topic + payload) queued for all clients. */
  bytes: number;
  /** Messages refused by a queue cap since this instance opened. */
  droppedMessages: number;
  droppedBytes: number;
  /** Sessions removed by `expireSessions` since this instance opened. */
  expiredSessions: number;
}

export interface ExpiryResult {
  sessions: number;
  messages: number;
  clientIds: string[];
}

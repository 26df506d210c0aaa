/**
 * Durable SQLite persistence for aedes 1.x. See sqlite-persistence.ts for the wiring, the
 * durability rules (I5), the queue cap policy and session expiry (I8).
 */
export { ERR_SCHEMA_TOO_NEW, SCHEMA_VERSION } from './schema.js';
export {
  createSqlitePersistence,
  DEFAULT_SESSION_EXPIRY_MS,
  SqlitePersistence,
} from './sqlite-persistence.js';
export { matchTopic } from './topic-match.js';
export type {
  AuthorizePublish,
  BrokerRef,
  ClientRef,
  ExpiryResult,
  PacketLike,
  PersistenceStats,
  QueueDropEvent,
  QueueLimits,
  QueueStats,
  SqlitePersistenceOptions,
  SubscriptionIn,
  TopicSubscription,
} from './types.js';

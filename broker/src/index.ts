/** The broker as a library (for `outpost up` and tests). See broker/README.md. */
export { Acl, type Decision, SPARKPLUG_NAMESPACE } from './acl.js';
export {
  type Broker,
  type CreateBrokerOptions,
  type CrlReload,
  createBroker,
  type StartedPorts,
} from './broker.js';
export {
  type BrokerConfig,
  type BrokerConfigInput,
  BrokerConfigSchema,
  brokerConfig,
  configDocs,
  isLoopbackHost,
  type LoadConfigOptions,
  loadConfig,
} from './config.js';
export { BROKER_ERRORS, BrokerError, type BrokerErrorCode, isBrokerError } from './errors.js';
export { clientIdAllowed, type Identity, ROLES, type Role } from './identity.js';
export { BrokerMetrics } from './metrics.js';
export { REJECT_REASONS, type RejectReason } from './reasons.js';
export { DB_FILE, type PersistenceOption } from './store.js';
export { addUser, listUsers, removeUser, UserStore } from './users.js';

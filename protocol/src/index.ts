/** The Outpost wire contract: pure, no I/O. See protocol/SPEC.md. */
export * from './cbor.js';
export * from './cose.js';
export * from './ed25519.js';
export * from './envelope.js';
export * from './reasons.js';
export * from './schemas.js';
export * from './time.js';
export * from './topics.js';
export * from './trust.js';

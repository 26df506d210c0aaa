/**
 * The agent's pinned trust root ([TRUST-3], [TRUST-5]). Provisioning writes the genesis document to a
 * file; the first boot verifies it (self-signed threshold) and pins it in the database. From then on
 * the database copy rules, and only a `trust.update` command advances it, one version at a time, in
 * the same transaction as its journal entry.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { openTrustRoot, type TrustRoot, TrustStore } from '../../../protocol/src/index.js';
import { type AgentStore, META } from './store.js';

export class PinnedTrust {
  private store_: TrustStore;

  private constructor(
    private readonly store: AgentStore,
    initial: TrustStore,
  ) {
    this.store_ = initial;
  }

  /** Loads the pinned root from the database, or pins the provisioned file (genesis). */
  static load(store: AgentStore, provisionedPath: string, log: Logger): PinnedTrust {
    const pinned = store.metaBlob(META.trustRoot);
    if (pinned) {
      // Verified when it was pinned; checked again so a tampered database cannot widen trust.
      const root = openTrustRoot(pinned);
      return new PinnedTrust(store, new TrustStore(root));
    }
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(readFileSync(provisionedPath));
    } catch (err) {
      throw new Error(`cannot read provisioned trust root ${provisionedPath}: ${(err as Error).message}`);
    }
    const root = openTrustRoot(bytes);
    store.tx(() => {
      store.setMeta(META.trustRoot, bytes);
      store.setMeta(META.trustVer, root.ver);
    });
    log.info({ trustVersion: root.ver }, 'trust root pinned from provisioning file');
    return new PinnedTrust(store, new TrustStore(root));
  }

  get current(): TrustStore {
    return this.store_;
  }

  get version(): number {
    return this.store_.version;
  }

  /**
   * Verifies a new document against the current root (throws ProtocolError `trust-version`,
   * `trust-threshold`, `malformed`, `expired`) and persists it. Call inside the journal transaction;
   * the in-memory root switches only after `commit()`.
   */
  verify(doc: Uint8Array, nowSec: number): TrustRoot {
    return openTrustRoot(doc, { current: this.store_.root, now: nowSec });
  }

  persist(doc: Uint8Array, root: TrustRoot): void {
    this.store.setMeta(META.trustRoot, doc);
    this.store.setMeta(META.trustVer, root.ver);
  }

  commit(root: TrustRoot): void {
    this.store_ = new TrustStore(root);
  }
}

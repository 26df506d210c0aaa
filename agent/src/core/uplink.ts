/**
 * Signs the agent's uplink ([ENV-UP-1]): acks and state with the site's Ed25519 key (kid
 * `site:<site>`), numbered with the persisted, increasing uplink sequence `useq` ([ACK-2]), and queued in
 * the outbox. Call inside the transaction that records the event being acknowledged.
 */
import {
  type Ack,
  encodeAck,
  encodeState,
  PROTOCOL_VERSION,
  type Signer,
  type State,
  type Topics,
} from '../../../protocol/src/index.js';
import type { Outbox } from './outbox.js';
import type { AgentStore } from './store.js';

export type AckFields = Omit<Ack, 'v' | 'site' | 'useq' | 'at'>;
export type StateFields = Omit<State, 'v' | 'site' | 'useq' | 'at'>;

export class Uplink {
  constructor(
    private readonly site: string,
    private readonly signer: Signer,
    private readonly store: AgentStore,
    private readonly outbox: Outbox,
    private readonly topics: Topics,
    /** Trusted time, seconds. */
    private readonly at: () => number,
  ) {}

  ack(fields: AckFields): void {
    const msg: Ack = {
      v: PROTOCOL_VERSION,
      site: this.site,
      useq: this.store.nextUseq(),
      at: this.at(),
      ...fields,
    };
    if (msg.msg !== undefined) msg.msg = msg.msg.slice(0, 256);
    this.outbox.addAck(this.topics.ack(this.site), encodeAck(msg, this.signer));
  }

  state(fields: StateFields): void {
    const msg: State = {
      v: PROTOCOL_VERSION,
      site: this.site,
      useq: this.store.nextUseq(),
      at: this.at(),
      ...fields,
    };
    this.outbox.addState(this.topics.state(this.site), encodeState(msg, this.signer), msg.full);
  }
}

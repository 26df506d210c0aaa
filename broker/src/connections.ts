/**
 * Every live connection the broker accepted, keyed by the stream aedes was given (`client.conn`).
 * Holds what aedes does not know: the listener, the TLS socket (peer certificate), the metrics label,
 * and, once authenticated, the identity. A context disappears when its socket closes.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { GuardedConnection } from './guarded-connection.js';
import type { Identity } from './identity.js';
import type { RoleLabel } from './metrics.js';

export type ListenerKind = 'tls' | 'plain';

export interface ConnectInfo {
  readonly clientId: string;
  readonly keepalive: number;
  readonly will?: { readonly topic: string; readonly retain: boolean };
}

export interface ConnContext {
  readonly id: number;
  readonly listener: ListenerKind;
  readonly remoteAddress: string;
  readonly socket: Socket | TLSSocket;
  readonly conn: GuardedConnection;
  /** Metrics label: `none` until authenticated. */
  role: RoleLabel;
  identity?: Identity;
  connect?: ConnectInfo;
}

export class ConnectionTable {
  readonly #byConn = new Map<Duplex, ConnContext>();
  #next = 1;

  get size(): number {
    return this.#byConn.size;
  }

  add(init: Omit<ConnContext, 'id' | 'role'>): ConnContext {
    const ctx: ConnContext = { ...init, id: this.#next++, role: 'none' };
    this.#byConn.set(init.conn, ctx);
    init.conn.once('close', () => this.#byConn.delete(init.conn));
    return ctx;
  }

  get(conn: unknown): ConnContext | undefined {
    return this.#byConn.get(conn as Duplex);
  }

  all(): ConnContext[] {
    return [...this.#byConn.values()];
  }

  /** Destroys every connection (shutdown). */
  destroyAll(): void {
    for (const ctx of this.#byConn.values()) ctx.conn.destroy();
  }
}

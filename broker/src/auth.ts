/**
 * The aedes 1.x hooks: who is connecting (preConnect + authenticate), and what they may do
 * (authorizePublish, authorizeSubscribe, authorizeForward). Every refusal is counted in
 * `outpost_broker_rejects_total{reason}` and logged with identity, topic and reason (never payloads
 * or passwords); repeated warnings of one reason are rate-limited in the log, never in the metric.
 *
 * CONNACK codes (MQTT 3.1.1): 2 identifier rejected (client id, keepalive — as Mosquitto does for
 * max_keepalive), 4 bad username or password, 5 not authorized (certificates, roles, wills).
 */
import type { AedesOptions, Client } from 'aedes';
import type { Logger } from 'pino';
import { parseTopic } from '../../protocol/src/index.js';
import type { Acl } from './acl.js';
import type { ConnContext, ConnectionTable } from './connections.js';
import {
  clientIdAllowed,
  type Identity,
  isRole,
  NAME_PATTERN,
  normaliseSerial,
  parseUsername,
  type Role,
} from './identity.js';
import type { BrokerMetrics } from './metrics.js';
import type { RejectReason } from './reasons.js';
import { RefusalLog } from './refusal-log.js';
import type { UserStore } from './users.js';

type Hooks = Required<
  Pick<
    AedesOptions,
    'preConnect' | 'authenticate' | 'authorizePublish' | 'authorizeSubscribe' | 'authorizeForward'
  >
>;
type AuthorizePublish = Hooks['authorizePublish'];

/** Marks errors whose refusal was already counted, so the clientError listener does not count it again. */
export const COUNTED = Symbol('outpost.counted');

export interface AuthOptions {
  readonly acl: Acl;
  readonly users: () => UserStore;
  readonly connections: ConnectionTable;
  readonly metrics: BrokerMetrics;
  readonly log: Logger;
  /** Serials revoked by the CRL currently loaded. */
  readonly revoked: () => ReadonlySet<string>;
  readonly passwordRolesOverTls: readonly Role[];
  readonly insecureTrustClientId: boolean;
  readonly maxKeepaliveSec: number;
  readonly requireKeepalive: boolean;
  /** Wraps the ACL decision for publishes (the durable persistence's commit-before-PUBACK). */
  readonly wrapAuthorizePublish?: (inner: AuthorizePublish) => AuthorizePublish;
}

function certReason(code: string | undefined): RejectReason {
  switch (code) {
    case 'CERT_REVOKED':
      return 'cert-revoked';
    case 'CERT_HAS_EXPIRED':
      return 'cert-expired';
    case 'CERT_NOT_YET_VALID':
      return 'cert-not-yet-valid';
    default:
      return 'cert-untrusted';
  }
}

class Refusal extends Error {
  constructor(
    readonly reason: RejectReason,
    readonly returnCode: 2 | 3 | 4 | 5,
    readonly detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

export interface AuthHooks extends Hooks {
  /** Identity of an authenticated aedes client. */
  identityOf(client: Client | null | undefined): Identity | undefined;
}

export function createAuthHooks(o: AuthOptions): AuthHooks {
  const log = o.log;
  const refusals = new RefusalLog(log);

  const ctxOf = (client: Client | null | undefined): ConnContext | undefined =>
    client ? o.connections.get(client.conn) : undefined;
  // Kept per aedes client as well as per connection: aedes may still ask about a client (a last
  // delivery, its will) after its socket, and with it the connection context, has gone.
  const identities = new WeakMap<Client, Identity>();
  const identityOf = (client: Client | null | undefined): Identity | undefined =>
    client ? (identities.get(client) ?? ctxOf(client)?.identity) : undefined;

  function refuse(reason: RejectReason, fields: Record<string, unknown>, msg: string): void {
    o.metrics.reject(reason);
    refusals.warn(reason, fields, msg);
  }

  function who(
    ctx: ConnContext | undefined,
    clientId?: string,
    id: Identity | undefined = ctx?.identity,
  ): Record<string, unknown> {
    return {
      clientId: clientId ?? id?.clientId,
      ...(id && { role: id.role, name: id.name, method: id.method }),
      remote: ctx?.remoteAddress,
      listener: ctx?.listener,
    };
  }

  async function identify(
    ctx: ConnContext,
    clientId: string,
    username?: string,
    password?: Buffer,
  ): Promise<Identity> {
    const sock = ctx.socket as import('node:tls').TLSSocket;
    const peer = ctx.listener === 'tls' ? sock.getPeerCertificate() : undefined;
    if (peer && Object.keys(peer).length > 0) {
      if (!sock.authorized) {
        const code = String(sock.authorizationError ?? '');
        throw new Refusal(certReason(code), 5, `client certificate refused by TLS: ${code}`);
      }
      const cn = peer.subject?.CN;
      const ou = peer.subject?.OU;
      if (typeof cn !== 'string' || !NAME_PATTERN.test(cn))
        throw new Refusal('cert-identity', 5, 'missing or invalid CN');
      if (typeof ou !== 'string' || !isRole(ou))
        throw new Refusal('cert-identity', 5, 'missing, multiple or unknown OU');
      const serial = normaliseSerial(peer.serialNumber ?? '');
      // Defence in depth for resumed TLS sessions, whose verification verdict is the one cached at the
      // first handshake: the current CRL and the validity dates are checked here again.
      if (o.revoked().has(serial)) throw new Refusal('cert-revoked', 5, `serial ${serial} is on the CRL`);
      const now = Date.now();
      if (Date.parse(peer.valid_to) < now) throw new Refusal('cert-expired', 5, `expired ${peer.valid_to}`);
      if (Date.parse(peer.valid_from) > now)
        throw new Refusal('cert-not-yet-valid', 5, `valid from ${peer.valid_from}`);
      return { role: ou, name: cn, clientId, method: 'certificate', serial };
    }
    if (username !== undefined && username !== '') {
      const claimed = parseUsername(username);
      if (!claimed) throw new Refusal('bad-credentials', 4, 'username is not role:name');
      if (ctx.listener === 'plain' && o.insecureTrustClientId) {
        return { ...claimed, clientId, method: 'insecure' };
      }
      if (ctx.listener === 'tls' && !o.passwordRolesOverTls.includes(claimed.role)) {
        throw new Refusal('password-not-allowed', 5, `${claimed.role} must use a client certificate`);
      }
      const ok = password ? await o.users().verify(username, password) : undefined;
      if (!ok) throw new Refusal('bad-credentials', 4, `unknown user or wrong password for ${username}`);
      return { ...ok, clientId, method: 'password' };
    }
    if (ctx.listener === 'plain' && o.insecureTrustClientId) {
      return { role: 'agent', name: clientId, clientId, method: 'insecure' };
    }
    throw new Refusal('no-credentials', 5, 'no client certificate and no username');
  }

  const preConnect: Hooks['preConnect'] = (client, packet, callback) => {
    const ctx = ctxOf(client);
    if (!ctx) {
      callback(new Error('unknown connection'), false);
      return;
    }
    ctx.connect = {
      clientId: packet.clientId ?? '',
      keepalive: packet.keepalive ?? 0,
      ...(packet.will && { will: { topic: String(packet.will.topic), retain: packet.will.retain === true } }),
    };
    callback(null, true);
  };

  const authenticate: Hooks['authenticate'] = (client, username, password, done) => {
    const ctx = ctxOf(client);
    const clientId = ctx?.connect?.clientId ?? '';
    const run = async (): Promise<Identity> => {
      if (!ctx) throw new Refusal('protocol-error', 3, 'unknown connection');
      const id = await identify(ctx, clientId, username, password);
      if (!clientIdAllowed(id.role, id.name, clientId)) {
        throw new Refusal(
          'client-id',
          2,
          `client id ${JSON.stringify(clientId)} is not ${id.role} ${id.name}`,
        );
      }
      const ka = ctx.connect?.keepalive ?? 0;
      if ((o.requireKeepalive && ka === 0) || ka > o.maxKeepaliveSec) {
        throw new Refusal('keepalive', 2, `keepalive ${ka}s (must be 1..${o.maxKeepaliveSec})`);
      }
      const will = ctx.connect?.will;
      if (will) {
        const d = o.acl.willAllowed(id, will.topic, will.retain);
        if (!d.ok)
          throw new Refusal(
            d.reason === 'will-topic' ? 'will-topic' : d.reason,
            5,
            `will ${will.topic}: ${d.detail}`,
          );
      }
      return id;
    };
    run().then(
      (id) => {
        if (!ctx) return;
        ctx.identity = id;
        identities.set(client, id);
        ctx.role = id.role;
        log.info(
          { clientId, role: id.role, name: id.name, method: id.method, remote: ctx.remoteAddress },
          'client authenticated',
        );
        done(null, true);
      },
      (err: unknown) => {
        const r = err instanceof Refusal ? err : new Refusal('protocol-error', 3, (err as Error).message);
        if (!(err instanceof Refusal))
          log.error({ err, clientId }, 'authentication failed with an internal error');
        refuse(r.reason, { ...who(ctx, clientId), detail: r.detail }, 'connection refused');
        const e = Object.assign(new Error(r.message), { returnCode: r.returnCode, [COUNTED]: true });
        done(e as Parameters<typeof done>[0], false);
      },
    );
  };

  const aclPublish: AuthorizePublish = (client, packet, callback) => {
    const topic = String(packet.topic);
    if (client === null) {
      // A will stored by an earlier run of this broker, published by aedes' will sweep (every
      // 4 x heartbeatIntervalMs, the first one that long after start-up): its connect-time check
      // happened then; accept only the shapes a will may have.
      const t = parseTopic(topic, o.acl.topics.prefix);
      const owner = (packet as { clientId?: unknown }).clientId;
      const ok =
        (t?.kind === 'site' && t.channel === 'status' && t.site === owner) ||
        (t?.kind === 'controller' &&
          typeof owner === 'string' &&
          clientIdAllowed('controller', 'controller', owner));
      if (ok) {
        callback(null);
        return;
      }
      refuse('will-topic', { topic, clientId: owner }, 'stored will refused');
      callback(Object.assign(new Error('will refused'), { [COUNTED]: true }));
      return;
    }
    const ctx = ctxOf(client);
    const id = identityOf(client);
    const d = id ? o.acl.canPublish(id, topic, packet.retain === true) : undefined;
    if (d?.ok) {
      callback(null);
      return;
    }
    const reason = d && !d.ok ? d.reason : 'acl-publish';
    refuse(
      reason,
      { ...who(ctx, client.id, id), topic, detail: d && !d.ok ? d.detail : 'no identity' },
      'publish refused',
    );
    callback(Object.assign(new Error(`publish to ${topic} refused: ${reason}`), { [COUNTED]: true }));
  };

  const authorizePublish = o.wrapAuthorizePublish ? o.wrapAuthorizePublish(aclPublish) : aclPublish;

  const authorizeSubscribe: Hooks['authorizeSubscribe'] = (client, sub, callback) => {
    const ctx = ctxOf(client);
    const id = identityOf(client);
    const d = id ? o.acl.canSubscribe(id, sub.topic) : undefined;
    if (d?.ok) {
      callback(null, sub);
      return;
    }
    const reason = d && !d.ok ? d.reason : 'acl-subscribe';
    refuse(
      reason,
      { ...who(ctx, client.id, id), topic: sub.topic, detail: d && !d.ok ? d.detail : 'no identity' },
      'subscription refused',
    );
    callback(null, null); // SUBACK 0x80 for this filter; the connection stays up
  };

  const authorizeForward: Hooks['authorizeForward'] = (client, packet) => {
    const ctx = ctxOf(client);
    const id = identityOf(client);
    const d = id ? o.acl.canRead(id, packet.topic) : undefined;
    if (d?.ok) return packet;
    refuse('acl-forward', { ...who(ctx, client.id, id), topic: packet.topic }, 'delivery refused');
    return null;
  };

  return { preConnect, authenticate, authorizePublish, authorizeSubscribe, authorizeForward, identityOf };
}

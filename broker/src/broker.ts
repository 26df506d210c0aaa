/**
 * `createBroker(opts)`: the broker's composition root. aedes 1.x + persistence (store.ts) + TLS with
 * client certificates and a reloadable CRL (listeners.ts) + identities and ACL (auth.ts, acl.ts) +
 * limits (guarded-connection.ts, rate-limit.ts, config.ts) + metrics (metrics.ts).
 *
 *   const broker = createBroker({ config: { certsDir, dataDir }, log });
 *   const { tlsPort, metricsPort } = await broker.start();
 *   ...
 *   await broker.close();
 *
 * No process-level side effects: signal handling (SIGHUP → reload) belongs to cli.ts.
 */
import type { EventEmitter } from 'node:events';
import { type Stats, unwatchFile, watchFile } from 'node:fs';
import type { Server, Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import { Aedes, type Client } from 'aedes';
import { type Logger, pino } from 'pino';
import { Acl } from './acl.js';
import { COUNTED, createAuthHooks } from './auth.js';
import {
  type BrokerConfig,
  type BrokerConfigInput,
  brokerConfig,
  tlsFiles,
  usersFilePath,
} from './config.js';
import { ConnectionTable } from './connections.js';
import { DeliveryGuard } from './delivery.js';
import { BrokerError } from './errors.js';
import {
  type AcceptDeps,
  closeServer,
  createPlainListener,
  createTlsListener,
  listen,
  loadTlsMaterial,
  type TlsMaterial,
} from './listeners.js';
import { BrokerMetrics, type MetricsServer, startMetricsServer } from './metrics.js';
import { ConnectionRateLimiter } from './rate-limit.js';
import type { RejectReason } from './reasons.js';
import { RefusalLog } from './refusal-log.js';
import { type BrokerStore, openStore, type PersistenceOption } from './store.js';
import { UserStore } from './users.js';
import { isStaleWill, publishStoredWills } from './wills.js';

export interface CreateBrokerOptions {
  /** Overrides on top of the schema defaults (validated and frozen), or a config from loadConfig(). */
  readonly config?: BrokerConfigInput | BrokerConfig | Record<string, unknown>;
  /** pino logger; a child `{ component: 'broker' }` is used. Silent if absent. */
  readonly log?: Logger;
  /** Default: SQLite under config.dataDir when set, else in-memory (dev). See store.ts. */
  readonly persistence?: PersistenceOption;
  /** Clock for the rate limiter (tests). */
  readonly now?: () => number;
}

export interface StartedPorts {
  /** The main MQTT port: TLS when enabled, else plain. */
  readonly mqttPort: number;
  readonly tlsPort?: number;
  readonly plainPort?: number;
  readonly metricsPort?: number;
}

export interface CrlReload {
  readonly revoked: number;
  readonly disconnected: number;
}

export interface Broker {
  readonly config: Readonly<BrokerConfig>;
  readonly metrics: BrokerMetrics;
  readonly acl: Acl;
  /** The aedes instance (after start()). */
  readonly aedes: Aedes;
  start(): Promise<StartedPorts>;
  close(): Promise<void>;
  /** Re-reads TLS files and the CRL; disconnects open connections whose certificate is now revoked. */
  reloadCrl(): Promise<CrlReload>;
  /** Re-reads the password user file. */
  reloadUsers(): Promise<void>;
  /** What SIGHUP does: reloadCrl() and reloadUsers(). */
  reload(): Promise<void>;
  /** Deletes abandoned sessions now (also runs every sessions.sweepIntervalMs). */
  expireSessions(): { sessions: number; messages: number } | undefined;
}

const NETWORK_ERRORS = /ECONNRESET|EPIPE|ETIMEDOUT|connection closed|write after end|aborted|socket hang up/i;

/** Maps aedes' clientError/connectionError messages to reject reasons (undefined: not a refusal). */
function classify(err: Error): RejectReason | undefined {
  const m = err.message ?? '';
  if (/drain timeout/.test(m)) return 'slow-consumer';
  if (/keep alive timeout/.test(m)) return undefined; // counted by the keepaliveTimeout event
  if (/connect did not arrive in time/.test(m)) return 'connect-timeout';
  if (/too many levels/.test(m)) return 'topic-too-deep';
  if (NETWORK_ERRORS.test(m) || NETWORK_ERRORS.test(String((err as NodeJS.ErrnoException).code)))
    return undefined;
  if (/Invalid protocol|queue limit|not allowed in|empty topic|only allowed/i.test(m))
    return 'protocol-error';
  return 'malformed-packet';
}

export function createBroker(opts: CreateBrokerOptions = {}): Broker {
  const config = brokerConfig(opts.config ?? {});
  const root = opts.log ?? pino({ level: 'silent' });
  const log = root.child({ component: 'broker' });
  const metrics = new BrokerMetrics();
  const acl = new Acl(config.prefix, config.limits);
  const connections = new ConnectionTable();
  const sockets = new Set<Socket>();
  const limiter = new ConnectionRateLimiter(config.rateLimit, opts.now);

  let aedes: Aedes | undefined;
  let store: BrokerStore | undefined;
  let users: UserStore | undefined;
  let material: TlsMaterial | undefined;
  let tlsServer: TlsServer | undefined;
  let plainServer: Server | undefined;
  let metricsServer: MetricsServer | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;
  let watchedCrl: string | undefined;
  let reloadChain: Promise<unknown> = Promise.resolve();
  let state: 'new' | 'starting' | 'started' | 'closing' | 'closed' = 'new';
  let closing: Promise<void> | undefined;

  const refusals = new RefusalLog(log);
  const refuse = (reason: RejectReason, fields: Record<string, unknown>, msg: string): void => {
    metrics.reject(reason);
    refusals.warn(reason, fields, msg);
  };

  function expireSessions(): { sessions: number; messages: number } | undefined {
    if (!store?.expire) return undefined;
    try {
      const r = store.expire();
      if (r.sessions > 0) metrics.sessionsExpired.inc(r.sessions);
      return r;
    } catch (err) {
      log.error({ err }, 'session expiry failed');
      return undefined;
    }
  }

  async function doReloadCrl(): Promise<CrlReload> {
    if (!tlsServer) return { revoked: 0, disconnected: 0 };
    let next: TlsMaterial;
    try {
      next = await loadTlsMaterial(tlsFiles(config));
      tlsServer.setSecureContext({ ...next.options });
    } catch (err) {
      metrics.crlReloads.inc({ result: 'error' });
      log.error({ err }, 'TLS/CRL reload failed; keeping the previous material');
      throw err;
    }
    material = next;
    metrics.crlReloads.inc({ result: 'ok' });
    let disconnected = 0;
    for (const ctx of connections.all()) {
      const id = ctx.identity;
      if (id?.method === 'certificate' && id.serial && next.revoked.has(id.serial)) {
        refuse(
          'cert-revoked',
          {
            clientId: id.clientId,
            role: id.role,
            name: id.name,
            serial: id.serial,
            remote: ctx.remoteAddress,
          },
          'revoked certificate disconnected after CRL reload',
        );
        ctx.conn.destroy();
        disconnected++;
      }
    }
    log.info({ revoked: next.revoked.size, disconnected }, 'CRL reloaded');
    return { revoked: next.revoked.size, disconnected };
  }

  /** Reloads run one at a time (SIGHUP, the file watcher and callers may overlap). */
  function reloadCrl(): Promise<CrlReload> {
    const run = reloadChain.then(doReloadCrl, doReloadCrl);
    reloadChain = run.catch(() => undefined);
    return run;
  }

  async function reloadUsers(): Promise<void> {
    if (!users) return;
    await users.reload();
    log.info({ users: users.size }, 'password users reloaded');
  }

  function watchCrl(path: string | undefined): void {
    if (!path || config.tls.watchCrlMs === 0) return;
    watchedCrl = path;
    watchFile(path, { interval: config.tls.watchCrlMs, persistent: false }, (cur: Stats, prev: Stats) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
      if (cur.nlink === 0) return; // deleted: keep the CRL we have
      reloadCrl().catch(() => undefined); // logged and counted in doReloadCrl
    });
  }

  async function start(): Promise<StartedPorts> {
    if (state !== 'new') throw new BrokerError('state', `start() called when ${state}`);
    state = 'starting';
    try {
      users = await UserStore.open(usersFilePath(config));
      if (config.tls.enabled) material = await loadTlsMaterial(tlsFiles(config));
      store = openStore({
        config,
        log,
        metrics,
        ...(opts.persistence !== undefined && { persistence: opts.persistence }),
        mayStore: (_id, client, filter) => {
          const ctx = connections.get((client as Client).conn);
          return ctx?.identity !== undefined && acl.canSubscribe(ctx.identity, filter).ok;
        },
      });
      metrics.setQueueSource(store.queues);
      const hooks = createAuthHooks({
        acl,
        users: () => users!,
        connections,
        metrics,
        log: root.child({ component: 'broker.auth' }),
        revoked: () => material?.revoked ?? new Set(),
        passwordRolesOverTls: config.tls.passwordRoles,
        insecureTrustClientId: config.plain.insecureTrustClientId,
        maxKeepaliveSec: config.limits.maxKeepaliveSec,
        requireKeepalive: config.limits.requireKeepalive,
        ...(store.wrapAuthorizePublish && { wrapAuthorizePublish: store.wrapAuthorizePublish }),
      });
      const { identityOf, preConnect, authorizePublish, ...aedesHooks } = hooks;
      const aedesClients = (): Record<string, Client | undefined> =>
        (aedes as unknown as { clients: Record<string, Client | undefined> }).clients;
      const delivery = new DeliveryGuard({
        log: log.child({ component: 'broker.delivery' }),
        onOverflow: (clientId) =>
          refuse('slow-consumer', { clientId }, 'session closed: live messages piled up behind its queue'),
      });
      aedes = await Aedes.createBroker({
        ...(config.id && { id: config.id }),
        persistence: store.persistence,
        // mqemitter queues messages beyond `concurrency` in flight and, as each finishes, starts the next
        // from inside the finished one's callback: a long queue of messages that finish at once (no
        // subscriber, or closed clients) recurses until the stack overflows. Closing 10,000 connections
        // (their wills and $SYS disconnect notices) did that. 0 = no queue: every message starts when it
        // is published, in publish order, and the queue was unbounded anyway.
        concurrency: 0,
        heartbeatInterval: config.heartbeatIntervalMs,
        connectTimeout: config.limits.connectTimeoutMs,
        drainTimeout: config.limits.drainTimeoutMs,
        maxClientsIdLength: 128,
        maxTopicLevels: 100, // aedes' hard guard; the configured (lower) limit is the ACL's, counted
        ...aedesHooks,
        authorizePublish: (client, packet, callback) => {
          if (isStaleWill(client, packet, client ? aedesClients()[client.id] : undefined)) {
            log.info(
              { clientId: client?.id, topic: packet.topic },
              'will not published: its connection was never acknowledged, or the client has another',
            );
            callback(Object.assign(new Error('stale will'), { [COUNTED]: true }));
            return;
          }
          authorizePublish(client, packet, callback);
        },
        preConnect: (client, packet, callback) => {
          delivery.attach(client, packet.clean !== false);
          preConnect(client, packet, callback);
        },
      });
      delivery.install(aedes);
      // The role is remembered per registered client: by the time aedes reports the disconnect the
      // connection context may already be gone.
      const registered = new WeakMap<Client, string>();
      aedes.on('client', (client) => {
        const role = identityOf(client)?.role;
        if (!role) return;
        registered.set(client, role);
        metrics.connections.inc({ role });
      });
      aedes.on('clientDisconnect', (client) => {
        const role = registered.get(client);
        if (role) {
          registered.delete(client);
          metrics.connections.dec({ role });
        }
        log.debug({ clientId: client.id }, 'client disconnected');
      });
      aedes.on('keepaliveTimeout', (client) =>
        refuse('keepalive-timeout', { clientId: client.id }, 'client dropped: keepalive timeout'),
      );
      // aedes reports one failure once per pending write (e.g. every delivery waiting on a drain that
      // timed out): count and log each reason once per connection.
      const seen = new WeakMap<object, Set<RejectReason>>();
      const onError = (client: Client | null, err: Error) => {
        if ((err as unknown as Record<symbol, unknown>)[COUNTED]) return;
        const reason = classify(err);
        const clientId = client?.id ?? undefined;
        if (!reason) {
          log.debug({ clientId, err: err.message }, 'connection closed');
          return;
        }
        if (client) {
          const reasons = seen.get(client) ?? new Set<RejectReason>();
          if (reasons.has(reason)) return;
          reasons.add(reason);
          seen.set(client, reasons);
        }
        refuse(reason, { clientId, detail: err.message.slice(0, 200) }, 'client dropped');
      };
      aedes.on('clientError', onError);
      aedes.on('connectionError', onError);
      (aedes as unknown as EventEmitter).on('error', (err: Error) => log.error({ err }, 'aedes error'));

      await publishStoredWills(aedes, log);

      const deps: AcceptDeps = {
        aedes,
        connections,
        metrics,
        log,
        limiter,
        maxConnections: config.limits.maxConnections,
        maxPacketBytes: config.limits.maxPacketBytes,
        refuse,
        sockets,
      };
      let tlsPort: number | undefined;
      let plainPort: number | undefined;
      if (material) {
        tlsServer = createTlsListener(deps, material, config.limits.connectTimeoutMs);
        tlsPort = await listen(tlsServer, config.tls.port, config.tls.host, config.limits.listenBacklog);
        watchCrl(tlsFiles(config).crl);
      }
      if (config.plain.enabled) {
        plainServer = createPlainListener(deps);
        plainPort = await listen(
          plainServer,
          config.plain.port,
          config.plain.host,
          config.limits.listenBacklog,
        );
        if (config.plain.insecureTrustClientId) {
          log.warn('plain listener trusts client-claimed identities (insecureTrustClientId): tests/dev only');
        }
      }
      let metricsPort: number | undefined;
      if (config.metrics.enabled) {
        metricsServer = await startMetricsServer(metrics, config.metrics.host, config.metrics.port);
        metricsPort = metricsServer.port;
      }
      expireSessions();
      sweepTimer = setInterval(expireSessions, config.sessions.sweepIntervalMs);
      sweepTimer.unref();
      state = 'started';
      const ports: StartedPorts = {
        mqttPort: (tlsPort ?? plainPort)!,
        ...(tlsPort !== undefined && { tlsPort }),
        ...(plainPort !== undefined && { plainPort }),
        ...(metricsPort !== undefined && { metricsPort }),
      };
      log.info({ ...ports, persistence: store.kind, id: aedes.id }, 'broker listening');
      return ports;
    } catch (err) {
      await shutdown();
      throw err;
    }
  }

  async function shutdown(): Promise<void> {
    state = 'closing';
    if (sweepTimer) clearInterval(sweepTimer);
    if (watchedCrl) unwatchFile(watchedCrl);
    const servers = [tlsServer, plainServer].filter((s): s is Server => s !== undefined);
    const closed = servers.map(closeServer); // stop accepting; resolves when the last socket ends
    if (aedes) {
      const a = aedes;
      await new Promise<void>((resolve) => a.close(() => resolve()));
    }
    connections.destroyAll();
    for (const s of sockets) s.destroy();
    await Promise.all(closed);
    await reloadChain;
    await store?.close();
    await metricsServer?.close();
    state = 'closed';
    log.info('broker closed');
  }

  return {
    config,
    metrics,
    acl,
    get aedes(): Aedes {
      if (!aedes) throw new BrokerError('state', 'aedes exists after start()');
      return aedes;
    },
    start,
    close() {
      if (state === 'new') {
        state = 'closed';
        return Promise.resolve();
      }
      closing ??= shutdown();
      return closing;
    },
    reloadCrl,
    reloadUsers,
    async reload() {
      await reloadCrl();
      await reloadUsers();
    },
    expireSessions,
  };
}

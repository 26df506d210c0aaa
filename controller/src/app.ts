/**
 * `buildController(opts)`: the controller's composition root. Wires the store, signing keys, outbox
 * publisher, uplink ingest, MQTT connection and the fastify REST API. Nothing here is a module-level
 * singleton; `start()` connects and listens, `close()` stops everything in order.
 *
 *   const c = await buildController({ config, log });
 *   await c.start();            // MQTT + publisher + HTTP listen
 *   await c.app.inject(...);    // or test the API without listening
 *   await c.close();
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import { certsLayout } from '../../certs/src/layout.js';
import { openTrustRoot, Topics, type TrustRoot } from '../../protocol/src/index.js';
import type { ApiContext } from './api/context.js';
import { registerApi } from './api/plugin.js';
import type { Config } from './config.js';
import { Ingest } from './ingest.js';
import { type ControllerMqtt, connectMqtt } from './mqtt.js';
import { Publisher, type PublishPort } from './outbox/publisher.js';
import { createRollouts, mqttStatusPort, registerRolloutRoutes } from './rollouts/index.js';
import { loadSigningKeys, type SigningKeys } from './signing.js';
import { createControllerSparkplug } from './sparkplug/index.js';
import { openDb } from './store/db.js';
import { Store } from './store/index.js';
import { hashToken } from './store/users.js';

export interface ControllerOptions {
  readonly config: Readonly<Config>;
  readonly log: Logger;
  /** Default: loaded from `config.certsDir` (signing/<kid>.key) per `config.signing` / `config.approver`. */
  readonly signing?: SigningKeys;
  /** Milliseconds clock (tests). */
  readonly now?: () => number;
}

export interface Controller {
  readonly app: FastifyInstance;
  readonly store: Store;
  readonly publisher: Publisher;
  readonly ingest: Ingest;
  /** A freshly generated admin token (first start without `adminToken`); show it once, never log it. */
  readonly bootstrapToken?: string;
  /** Connects MQTT, starts the publisher and (unless `listen: false`) the HTTP server. */
  start(opts?: { listen?: boolean }): Promise<{ url?: string }>;
  close(): Promise<void>;
}

/** Ensures an admin exists: registers `config.adminToken`, or creates `admin` with a new token on first start. */
function bootstrapAdmin(store: Store, adminToken: string | undefined): string | undefined {
  return store.tx(() => {
    const now = store.now();
    const ensureAdmin = (): void => {
      if (store.users.get('admin')) return;
      store.users.create({ name: 'admin', role: 'admin', groups: ['*'], actor: 'controller', now });
      store.audit.append({ actor: 'controller', action: 'user.bootstrap', target: 'admin', outcome: 'ok' });
    };
    if (adminToken) {
      // A changed adminToken replaces the previous one: an old config secret must not stay valid.
      const revoked = store.users.revokeConfigTokensExcept(hashToken(adminToken), now);
      if (revoked > 0) {
        store.audit.append({
          actor: 'controller',
          action: 'token.revoke',
          target: 'admin',
          outcome: 'ok',
          detail: { bootstrap: revoked },
        });
      }
      // Present (or revoked by an admin: a revocation sticks until the setting changes).
      if (store.users.hasTokenHash(hashToken(adminToken))) return undefined;
      ensureAdmin();
      const t = store.users.addToken({
        user: 'admin',
        description: 'bootstrap (config)',
        actor: 'controller',
        now,
        token: adminToken,
      });
      store.audit.append({
        actor: 'controller',
        action: 'token.bootstrap',
        target: 'admin',
        outcome: 'ok',
        detail: { tokenId: t.id },
      });
      return undefined;
    }
    if (store.users.count() > 0) return undefined;
    ensureAdmin();
    const t = store.users.addToken({
      user: 'admin',
      description: 'bootstrap (generated)',
      actor: 'controller',
      now,
    });
    store.audit.append({
      actor: 'controller',
      action: 'token.bootstrap',
      target: 'admin',
      outcome: 'ok',
      detail: { tokenId: t.id },
    });
    return t.token;
  });
}

export async function buildController(opts: ControllerOptions): Promise<Controller> {
  const { config, log } = opts;
  const db = openDb(join(config.dataDir, 'controller.db'));
  const store = new Store(db, opts.now ?? Date.now);
  let app: FastifyInstance | undefined;
  try {
    const signing = opts.signing ?? loadSigningKeys(config.certsDir, config.signing, config.approver);
    const bootstrapToken = bootstrapAdmin(store, config.adminToken);
    const topics = new Topics(config.mqtt.prefix);

    let mqtt: ControllerMqtt | undefined;
    const port: PublishPort = {
      get connected() {
        return mqtt?.connected ?? false;
      },
      publish: (topic, payload) =>
        mqtt ? mqtt.publish(topic, payload) : Promise.reject(new Error('not connected')),
    };
    const publisher = new Publisher({
      store,
      signer: signing.signer,
      port,
      topics,
      log: log.child({ component: 'controller.outbox' }),
      opts: config.outbox,
    });
    // Staged rollouts (controller/src/rollouts): batches of per-site commands through the same outbox.
    const rollouts = createRollouts({
      store,
      signing,
      topics,
      log: log.child({ component: 'controller.rollouts' }),
      kick: () => publisher.kick(),
      status: mqttStatusPort(() => mqtt?.client),
      tickMs: config.outbox.tickMs,
    });
    const sparkplug = config.sparkplug.enabled
      ? createControllerSparkplug({ config, store, log: log.child({ component: 'controller.sparkplug' }) })
      : undefined;
    const ingest = new Ingest(
      store,
      config.mqtt.prefix,
      {
        progressed: () => {
          publisher.kick();
          rollouts.wake();
        },
        online: (site) => {
          publisher.siteOnline(site);
          rollouts.wake();
        },
      },
      log.child({ component: 'controller.ingest' }),
      config.outbox.pollMs,
    );

    const trustFile = certsLayout(config.certsDir).trustRoot;
    const trustRoot = (): TrustRoot | undefined => {
      if (!existsSync(trustFile)) return undefined;
      try {
        return openTrustRoot(new Uint8Array(readFileSync(trustFile)));
      } catch (err) {
        log.warn({ file: trustFile, err: (err as Error).message }, 'trust root unreadable');
        return undefined;
      }
    };

    const api: FastifyInstance = Fastify({
      loggerInstance: log.child({ component: 'controller.api' }) as FastifyBaseLogger,
      bodyLimit: config.api.bodyLimit,
      logController: new LogController({ disableRequestLogging: true }),
      return503OnClosing: true,
    }) as unknown as FastifyInstance;
    app = api;
    const ctx: ApiContext = {
      store,
      config,
      signing,
      log,
      kick: () => publisher.kick(),
      invalidateSite: (site) => ingest.invalidate(site),
      trustRoot,
      staleMs: config.outbox.heartbeatSec > 0 ? 3 * config.outbox.heartbeatSec * 1000 + 60_000 : 0,
      stats: () => ({
        mqtt: { connected: port.connected },
        outbox: publisher.snapshot(),
        commands: store.commands.counts(),
        ingest: ingest.stats(),
      }),
    };
    await registerApi(api, ctx);
    await registerRolloutRoutes(api, ctx, rollouts);
    await api.ready();

    return {
      app: api,
      store,
      publisher,
      ingest,
      ...(bootstrapToken ? { bootstrapToken } : {}),
      async start(startOpts = {}) {
        mqtt = connectMqtt(
          config,
          topics,
          { message: (t, p) => ingest.handle(t, p), connected: () => publisher.kick() },
          log.child({ component: 'controller.mqtt' }),
        );
        publisher.start();
        rollouts.start();
        sparkplug?.start();
        if (startOpts.listen === false) return {};
        const url = await api.listen({ host: config.api.host, port: config.api.port });
        log.info({ url }, 'controller API listening');
        return { url };
      },
      async close() {
        // Stop producing, stop the inputs, then record what arrived, then close the database.
        rollouts.stop();
        publisher.stop();
        await api.close();
        if (mqtt) await mqtt.close();
        await sparkplug?.close();
        publisher.finish();
        ingest.close();
        db.close();
      },
    };
  } catch (err) {
    await app?.close();
    db.close();
    throw err;
  }
}

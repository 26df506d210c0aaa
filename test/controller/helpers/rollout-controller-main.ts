/**
 * Child-process controller for rollout crash tests (SIGKILL): buildController plus the rollout engine
 * and routes, wired with controller/src/rollouts/index.ts as app.ts will wire them. The API (all
 * routes) listens on --port; the line `controller API listening` says it is up.
 *
 *   node --import tsx rollout-controller-main.ts DATA_DIR BROKER_URL PORT TOKEN
 */
import Fastify, { type FastifyInstance } from 'fastify';
import mqtt from 'mqtt';
import { pino } from 'pino';
import type { ApiContext } from '../../../controller/src/api/context.js';
import { registerApi } from '../../../controller/src/api/plugin.js';
import { buildController } from '../../../controller/src/app.js';
import { loadConfig } from '../../../controller/src/config.js';
import {
  createRollouts,
  mqttStatusPort,
  registerRolloutRoutes,
} from '../../../controller/src/rollouts/index.js';
import { Topics } from '../../../protocol/src/index.js';
import { controllerSigner } from './keys.js';

const [dataDir, brokerUrl, port, token] = process.argv.slice(2) as [string, string, string, string];
const log = pino({ level: 'warn' });
const config = loadConfig({
  overrides: {
    dataDir,
    certsDir: dataDir,
    adminToken: token,
    logLevel: 'warn',
    mqtt: { url: brokerUrl },
    api: { port: 0 },
    outbox: { tickMs: 50, retryMs: 400, maxRetryMs: 2000, heartbeatSec: 0 },
  },
});
const signer = controllerSigner();
const c = await buildController({ config, log, signing: { signer } });
await c.start({ listen: false });
const statusClient = await mqtt.connectAsync(brokerUrl, {
  clientId: `rollout-status-${process.pid}`,
  protocolVersion: 4,
});
const engine = createRollouts({
  store: c.store,
  signing: { signer },
  topics: new Topics(),
  log,
  kick: () => c.publisher.kick(),
  status: mqttStatusPort(() => statusClient),
  tickMs: 100,
});
const ctx: ApiContext = {
  store: c.store,
  config,
  signing: { signer },
  log,
  kick: () => c.publisher.kick(),
  invalidateSite: (s) => c.ingest.invalidate(s),
  trustRoot: () => undefined,
  stats: () => ({}),
  staleMs: 0,
};
const api = Fastify() as unknown as FastifyInstance;
await registerApi(api, ctx);
await registerRolloutRoutes(api, ctx, engine);
await api.listen({ host: '127.0.0.1', port: Number(port) });
engine.start();
process.stdout.write('controller API listening\n');
const stop = async (): Promise<void> => {
  engine.stop();
  await api.close();
  await statusClient.endAsync();
  await c.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());

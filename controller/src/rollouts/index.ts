/**
 * Wiring of staged rollouts into a controller: the engine, its routes under `/v1`, and the retained
 * status port over the controller's MQTT client. `app.ts` calls these (see the README of this
 * folder); tests call the same functions.
 *
 *   const rollouts = createRollouts({ store, signing, topics, log, kick: () => publisher.kick(),
 *     status: mqttStatusPort(() => mqtt?.client), tickMs: config.outbox.tickMs });
 *   // ingest hooks: progressed/online also call rollouts.wake()
 *   await registerRolloutRoutes(api, ctx, rollouts);     // after registerApi, before api.ready()
 *   rollouts.start();                                     // in start(), after publisher.start()
 *   rollouts.stop();                                      // first thing in close()
 */
import type { FastifyInstance } from 'fastify';
import type { MqttClient } from 'mqtt';
import type { ApiContext } from '../api/context.js';
import { rolloutRoutes } from '../api/rollouts.js';
import { RolloutEngine, type RolloutEngineDeps, type StatusPort } from './engine.js';
import { ensureRolloutSchema } from './schema.js';

export { RolloutEngine } from './engine.js';

export function createRollouts(deps: RolloutEngineDeps): RolloutEngine {
  ensureRolloutSchema(deps.store.db);
  return new RolloutEngine(deps);
}

/** Registers `/v1/rollouts…` (call after `registerApi`, so the auth hook and error handler apply). */
export async function registerRolloutRoutes(
  app: FastifyInstance,
  ctx: ApiContext,
  engine: RolloutEngine,
): Promise<void> {
  await app.register((v1) => rolloutRoutes(v1, ctx, engine), { prefix: '/v1' });
}

/** Retained QoS 1 publishes through the controller's MQTT client (undefined until it connects). */
export function mqttStatusPort(client: () => MqttClient | undefined): StatusPort {
  return {
    get connected() {
      return client()?.connected ?? false;
    },
    async publishRetained(topic, payload) {
      const c = client();
      if (!c) throw new Error('not connected');
      await c.publishAsync(topic, payload, { qos: 1, retain: true });
    },
  };
}

/**
 * The controller's MQTT connection: persistent session (`clean=false`, client id `controller`), QoS 1,
 * TLS with the controller's client certificate for `mqtts://`, plain TCP otherwise (loopback dev and
 * tests). Publishes its retained liveness on `{p}/controller/status` with a last will saying offline.
 */
import { readFileSync } from 'node:fs';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { certsLayout } from '../../certs/src/layout.js';
import type { Topics } from '../../protocol/src/index.js';
import type { Config } from './config.js';
import type { PublishPort } from './outbox/publisher.js';

export interface ControllerMqtt extends PublishPort {
  readonly client: MqttClient;
  close(): Promise<void>;
}

function liveness(online: boolean, reason?: string): string {
  return JSON.stringify({ v: 1, online, ts: new Date().toISOString(), ...(reason ? { reason } : {}) });
}

export function connectMqtt(
  config: Readonly<Config>,
  topics: Topics,
  handlers: { message(topic: string, payload: Uint8Array): void; connected(): void },
  log: Logger,
): ControllerMqtt {
  const m = config.mqtt;
  const opts: IClientOptions = {
    clientId: m.clientId,
    clean: false,
    protocolVersion: 4,
    keepalive: m.keepalive,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    will: {
      topic: topics.controllerStatus(),
      payload: Buffer.from(liveness(false, 'connection-lost')),
      qos: 1,
      retain: true,
    },
  };
  if (m.url.startsWith('mqtts:')) {
    const layout = certsLayout(config.certsDir);
    opts.ca = readFileSync(m.ca ?? layout.caCert);
    opts.cert = readFileSync(m.cert ?? layout.controllerCert);
    opts.key = readFileSync(m.key ?? layout.controllerKey);
    opts.rejectUnauthorized = true;
    Object.assign(opts, { minVersion: 'TLSv1.3' }); // passed through to tls.connect
  }
  const client = connect(m.url, opts);
  const subs = [topics.allSites('ack'), topics.allSites('state'), topics.allSiteStatus()];
  client.on('connect', (ack) => {
    log.info({ url: m.url, sessionPresent: ack.sessionPresent }, 'connected to broker');
    client.subscribe(subs, { qos: 1 }, (err) => {
      if (err) log.error({ err: err.message }, 'subscribe failed');
    });
    client.publish(topics.controllerStatus(), liveness(true), { qos: 1, retain: true });
    handlers.connected();
  });
  client.on('message', (topic, payload) => handlers.message(topic, payload));
  client.on('error', (err) => log.warn({ err: err.message }, 'mqtt error'));
  client.on('offline', () => log.warn({ url: m.url }, 'broker unreachable; retrying'));

  return {
    client,
    get connected() {
      return client.connected;
    },
    async publish(topic, payload) {
      await client.publishAsync(topic, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), {
        qos: 1,
      });
    },
    async close() {
      if (client.connected) {
        await client
          .publishAsync(topics.controllerStatus(), liveness(false, 'shutdown'), { qos: 1, retain: true })
          .catch(() => undefined);
      }
      // Give in-flight publishes up to 2 s for their PUBACKs, then disconnect (forcibly if some are
      // still out: the outbox resends whatever was not recorded, [OUT-5]).
      const deadline = Date.now() + 2000;
      while (Object.keys(client.outgoing).length > 0 && client.connected && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await client.endAsync(Object.keys(client.outgoing).length > 0 || !client.connected);
    },
  };
}

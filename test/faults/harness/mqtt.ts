/**
 * MQTT for the test itself, over TLS with the admin certificate (the admin role may publish anywhere
 * but $SYS, and read anything): injecting envelopes, reading retained statuses, following them as a
 * SCADA client would.
 */
import { readFileSync } from 'node:fs';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import type { CertsLayout } from '../../../certs/src/index.js';
import { sleep } from '../../helpers/index.js';

// biome-ignore lint/suspicious/noExplicitAny: JSON payloads
type Json = any;

export interface StatusWatch {
  /** The last retained status of a site (SiteStatus JSON). */
  latest(site: string): Json;
  controller(): Json;
  hasAlarm(site: string, code: string): boolean;
  close(): Promise<void>;
}

export class AdminMqtt {
  private readonly clients = new Set<MqttClient>();

  constructor(
    private readonly layout: CertsLayout,
    private readonly port: number,
  ) {}

  /** An MQTT client over TLS with the admin certificate (may publish anywhere but $SYS). */
  async adminClient(opts: IClientOptions = {}): Promise<MqttClient> {
    const l = this.layout;
    const c = await connectAsync(`mqtts://127.0.0.1:${this.port}`, {
      ca: readFileSync(l.caCert),
      cert: readFileSync(l.adminCert),
      key: readFileSync(l.adminKey),
      clientId: `admin.t${Math.random().toString(36).slice(2, 10)}`,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: 30,
      ...opts,
    });
    this.clients.add(c);
    return c;
  }

  /** Retained status of a site as SCADA sees it (via an admin subscription), or undefined. */
  async retainedStatus(site: string): Promise<Json> {
    const c = await this.adminClient();
    try {
      const topic = `outpost/v1/site/${site}/status`;
      const got = new Promise<Json>((resolve) => {
        c.on('message', (t, p) => {
          if (t === topic) resolve(JSON.parse(p.toString('utf8')));
        });
      });
      await c.subscribeAsync(topic, { qos: 1 });
      return await Promise.race([got, sleep(3_000).then(() => undefined)]);
    } finally {
      await this.end(c);
    }
  }

  /** Follows every site's retained status and the controller's liveness (as a SCADA client would). */
  async statusWatch(): Promise<StatusWatch> {
    const c = await this.adminClient();
    const sites = new Map<string, Json>();
    let controller: Json;
    c.on('message', (topic, payload) => {
      if (payload.length === 0) return;
      try {
        const j = JSON.parse(payload.toString('utf8'));
        if (topic === 'outpost/v1/controller/status') controller = j;
        else {
          const m = /^outpost\/v1\/site\/([^/]+)\/status$/.exec(topic);
          if (m) sites.set(m[1]!, j);
        }
      } catch {
        // not JSON: ignored
      }
    });
    await c.subscribeAsync(['outpost/v1/site/+/status', 'outpost/v1/controller/status'], { qos: 1 });
    return {
      latest: (site) => sites.get(site),
      controller: () => controller,
      hasAlarm: (site, code) =>
        ((sites.get(site)?.alarms ?? []) as { code: string }[]).some((a) => a.code === code),
      close: () => this.end(c),
    };
  }

  async end(c: MqttClient): Promise<void> {
    this.clients.delete(c);
    await Promise.race([c.endAsync(true), sleep(2_000)]).catch(() => undefined);
  }

  /** Ends every client still open. */
  async closeAll(): Promise<void> {
    for (const c of [...this.clients]) await this.end(c);
  }
}

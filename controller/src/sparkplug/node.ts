/**
 * One Sparkplug B edge node (Sparkplug 3.0) on its own MQTT connection:
 *
 * - MQTT 3.1.1, clean session; the NDEATH (QoS 1, not retained, payload = the bdSeq metric only) is
 *   the connection's will. Every new connection uses the next bdSeq (0..255, wrapping), persisted
 *   before CONNECT, so NBIRTH and its NDEATH always carry the same bdSeq and a restart moves on.
 * - After CONNACK it subscribes to its NCMD topic (and the primary host's STATE), then publishes
 *   NBIRTH (seq 0) and one DBIRTH per device (= site); an offline site gets its DBIRTH followed by a
 *   DDEATH, so a host knows its metrics and last values, marked stale.
 * - Then only changes: DDATA with the changed metrics by alias, DDEATH when a site goes offline,
 *   DBIRTH when it comes back or its metric set changes (a stack added or removed), NDATA for node
 *   metrics. `seq` counts every message of the node after NBIRTH, 0..255 wrapping; NDEATH has none.
 * - BIRTH, DATA and device DEATH messages are QoS 0, never retained. Nothing is queued while
 *   disconnected: the births of the next session carry the current values.
 * - NCMD `Node Control/Rebirth` = true (by name or alias) republishes every birth with the same
 *   bdSeq. STATE of the configured primary host (`{"online": bool, "timestamp": ms}`, older
 *   timestamps ignored): going online triggers a rebirth; going offline is logged and published as
 *   `Outpost/primary_host_online` = false, but publishing continues (Outpost does not hold data back).
 */
import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import {
  AGE_METRICS,
  BDSEQ_METRIC,
  deviceMetrics,
  type MetricDef,
  type NodeFacts,
  nodeMetrics,
  REBIRTH_METRIC,
} from './metrics.js';
import { decodePayload, encodePayload, type MetricValue, type OutMetric, toNumber } from './payload.js';
import type { SiteView } from './source.js';
import type { SparkplugStateFile } from './state-file.js';
import { deviceTopic, nodeTopic, stateTopic } from './topics.js';

export interface EdgeNodeOptions {
  readonly group: string;
  readonly node: string;
  readonly clientId: string;
  /** Opens an MQTT connection with these options (url and TLS are bound by the caller). */
  readonly connect: (opts: IClientOptions) => MqttClient;
  readonly state: SparkplugStateFile;
  readonly keepalive: number;
  readonly primaryHostId?: string;
  readonly primaryHostWaitMs: number;
  readonly rebirthMinIntervalMs: number;
  readonly ageIntervalMs: number;
  readonly now: () => number;
  readonly log: Logger;
}

interface Published {
  readonly alias: number;
  readonly type: MetricDef['type'];
  value: MetricValue;
}

interface Device {
  alive: boolean;
  metrics: Map<string, Published>;
  names: string;
  ageAt: number;
}

export interface EdgeNodeStats {
  readonly group: string;
  readonly node: string;
  readonly connected: boolean;
  readonly birthed: boolean;
  readonly bdSeq: number | null;
  readonly seq: number;
  readonly devices: number;
  readonly devicesAlive: number;
  readonly births: number;
  readonly primaryHostOnline: boolean;
}

const namesKey = (defs: readonly MetricDef[]) => defs.map((d) => d.name).join('\n');
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30_000;

export class EdgeNode {
  private client: MqttClient | undefined;
  private connected = false;
  private birthed = false;
  private closing = false;
  private bdSeq: number | null = null;
  private seq = 0;
  private births = 0;
  private lastBirthAt = Number.NEGATIVE_INFINITY;
  private sites: readonly SiteView[] = [];
  private readonly devices = new Map<string, Device>();
  private nodeValues = new Map<string, Published>();
  private primaryOnline = false;
  private primaryTs = Number.NEGATIVE_INFINITY;
  private primaryKnown = false;
  private birthWait: NodeJS.Timeout | undefined;
  private rebirthTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoffMs = RECONNECT_MIN_MS;
  private readonly key: string;
  private readonly ncmd: string;
  private readonly stateTopic: string | undefined;

  constructor(private readonly o: EdgeNodeOptions) {
    this.key = `${o.group}/${o.node}`;
    this.ncmd = nodeTopic(o.group, 'NCMD', o.node);
    this.stateTopic = o.primaryHostId ? stateTopic(o.primaryHostId) : undefined;
  }

  start(): void {
    this.open();
  }

  /** The node's current sites (devices). Publishes what changed when births are out. */
  update(sites: readonly SiteView[]): void {
    this.sites = sites;
    if (this.birthed) this.publishChanges();
  }

  stats(): EdgeNodeStats {
    let alive = 0;
    for (const d of this.devices.values()) if (d.alive) alive++;
    return {
      group: this.o.group,
      node: this.o.node,
      connected: this.connected,
      birthed: this.birthed,
      bdSeq: this.bdSeq,
      seq: this.seq,
      devices: this.devices.size,
      devicesAlive: alive,
      births: this.births,
      primaryHostOnline: this.primaryOnline,
    };
  }

  /** Publishes NDEATH (when connected) and disconnects; bounded (5 s). */
  async close(): Promise<void> {
    this.closing = true;
    this.clearTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    const bounded = <T>(p: Promise<T>) =>
      Promise.race([p, new Promise<void>((r) => setTimeout(r, 5000).unref())]).catch(() => undefined);
    if (this.connected && this.bdSeq !== null) {
      await bounded(
        client.publishAsync(nodeTopic(this.o.group, 'NDEATH', this.o.node), this.deathPayload(this.bdSeq), {
          qos: 1,
          retain: false,
        }),
      );
    }
    this.connected = false;
    this.birthed = false;
    await bounded(client.endAsync());
    client.end(true);
  }

  // ---- connection ---------------------------------------------------------------------------------

  private deathPayload(bdSeq: number): Buffer {
    return Buffer.from(
      encodePayload({
        timestamp: this.o.now(),
        metrics: [{ name: BDSEQ_METRIC, type: 'Int64', value: bdSeq }],
      }),
    );
  }

  private open(): void {
    if (this.closing) return;
    const bdSeq = this.o.state.nextBdSeq(this.key);
    this.bdSeq = bdSeq;
    const client = this.o.connect({
      clientId: this.o.clientId,
      clean: true,
      protocolVersion: 4,
      keepalive: this.o.keepalive,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      queueQoSZero: false,
      will: {
        topic: nodeTopic(this.o.group, 'NDEATH', this.o.node),
        payload: this.deathPayload(bdSeq),
        qos: 1,
        retain: false,
      },
    });
    this.client = client;
    client.on('connect', () => this.onConnect(client));
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('error', (err) => this.o.log.warn({ err: err.message }, 'Sparkplug MQTT error'));
    client.on('close', () => this.onClose(client));
  }

  private onConnect(client: MqttClient): void {
    if (client !== this.client) return;
    this.connected = true;
    this.backoffMs = RECONNECT_MIN_MS;
    this.primaryKnown = false;
    this.o.log.info({ bdSeq: this.bdSeq }, 'Sparkplug edge node connected');
    const subs = [this.ncmd, ...(this.stateTopic ? [this.stateTopic] : [])];
    client.subscribe(subs, { qos: 1 }, (err, granted) => {
      if (client !== this.client) return;
      if (err) this.o.log.error({ err: err.message }, 'Sparkplug subscribe failed');
      const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length > 0) this.o.log.warn({ topics: refused }, 'Sparkplug subscriptions refused');
      if (this.stateTopic && !this.primaryKnown && this.o.primaryHostWaitMs > 0) {
        this.birthWait = setTimeout(() => {
          this.birthWait = undefined;
          this.o.log.warn(
            { host: this.o.primaryHostId },
            'no STATE from the primary host application; publishing births anyway',
          );
          this.birth();
        }, this.o.primaryHostWaitMs);
        return;
      }
      this.birth();
    });
  }

  private onClose(client: MqttClient): void {
    if (client !== this.client) return;
    const was = this.connected;
    this.connected = false;
    this.birthed = false;
    this.clearTimers();
    this.client = undefined;
    client.removeAllListeners('connect');
    client.removeAllListeners('message');
    client.end(true);
    if (this.closing) return;
    if (was) this.o.log.warn({ bdSeq: this.bdSeq }, 'Sparkplug edge node disconnected; reconnecting');
    const wait = this.backoffMs;
    this.backoffMs = Math.min(RECONNECT_MAX_MS, this.backoffMs * 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.open();
    }, wait);
    this.reconnectTimer.unref();
  }

  private clearTimers(): void {
    if (this.birthWait) clearTimeout(this.birthWait);
    if (this.rebirthTimer) clearTimeout(this.rebirthTimer);
    this.birthWait = undefined;
    this.rebirthTimer = undefined;
  }

  // ---- inbound ------------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === this.ncmd) this.onNcmd(payload);
    else if (topic === this.stateTopic) this.onState(payload);
  }

  private onNcmd(payload: Buffer): void {
    let metrics: readonly { name?: string; alias?: unknown; value?: unknown }[];
    try {
      metrics = decodePayload(new Uint8Array(payload)).metrics ?? [];
    } catch {
      this.o.log.warn({ topic: this.ncmd }, 'NCMD is not a Sparkplug B payload; ignored');
      return;
    }
    const rebirthAlias = this.nodeValues.get(REBIRTH_METRIC)?.alias;
    for (const m of metrics) {
      const isRebirth =
        m.name === REBIRTH_METRIC || (rebirthAlias !== undefined && toNumber(m.alias) === rebirthAlias);
      if (isRebirth && m.value === true) {
        this.o.log.info('rebirth requested');
        this.requestRebirth();
      } else {
        this.o.log.info({ metric: m.name ?? toNumber(m.alias) }, 'NCMD metric not supported; ignored');
      }
    }
  }

  private onState(payload: Buffer): void {
    const text = payload.toString('utf8');
    let online: boolean | undefined;
    let ts: number | undefined;
    if (text === 'ONLINE' || text === 'OFFLINE') {
      online = text === 'ONLINE'; // Sparkplug 2.2 hosts
    } else {
      try {
        const j: unknown = JSON.parse(text);
        if (j && typeof j === 'object' && typeof (j as { online?: unknown }).online === 'boolean') {
          online = (j as { online: boolean }).online;
          const t = (j as { timestamp?: unknown }).timestamp;
          if (typeof t === 'number' && Number.isFinite(t)) ts = t;
        }
      } catch {
        // handled below
      }
    }
    if (online === undefined) {
      this.o.log.warn({ topic: this.stateTopic }, 'STATE payload not understood; ignored');
      return;
    }
    if (ts !== undefined) {
      if (ts < this.primaryTs) {
        this.o.log.info({ topic: this.stateTopic, ts }, 'stale STATE ignored');
        return;
      }
    }
    const newer = ts === undefined || ts > this.primaryTs;
    if (ts !== undefined) this.primaryTs = ts;
    const was = this.primaryOnline;
    const known = this.primaryKnown;
    this.primaryOnline = online;
    this.primaryKnown = true;
    if (this.birthWait) {
      clearTimeout(this.birthWait);
      this.birthWait = undefined;
      if (!online) {
        this.o.log.warn(
          { host: this.o.primaryHostId },
          'primary host application offline; publishing anyway',
        );
      }
      this.birth();
      return;
    }
    if (online && (!was || (newer && known))) {
      this.o.log.info({ host: this.o.primaryHostId }, 'primary host application online; rebirth');
      if (this.connected) this.birth();
    } else if (!online && was) {
      this.o.log.warn({ host: this.o.primaryHostId }, 'primary host application offline; still publishing');
      if (this.birthed) this.publishNodeChanges();
    }
  }

  private requestRebirth(): void {
    if (!this.connected) return;
    const since = this.o.now() - this.lastBirthAt;
    if (since >= this.o.rebirthMinIntervalMs) {
      this.birth();
      return;
    }
    if (this.rebirthTimer) return;
    this.rebirthTimer = setTimeout(() => {
      this.rebirthTimer = undefined;
      if (this.connected) this.birth();
    }, this.o.rebirthMinIntervalMs - since);
    this.rebirthTimer.unref();
  }

  // ---- outbound -----------------------------------------------------------------------------------

  private nextSeq(): number {
    const s = this.seq;
    this.seq = (this.seq + 1) % 256;
    return s;
  }

  private send(topic: string, timestamp: number, metrics: readonly OutMetric[], seq: boolean): void {
    const client = this.client;
    if (!client || !this.connected) return;
    const bytes = encodePayload({ timestamp, ...(seq ? { seq: this.nextSeq() } : {}), metrics });
    client.publish(topic, Buffer.from(bytes), { qos: 0, retain: false });
  }

  private facts(): NodeFacts {
    let online = 0;
    for (const s of this.sites) if (s.online) online++;
    return { sites: this.sites.length, sitesOnline: online, primaryHostOnline: this.primaryOnline };
  }

  /** NBIRTH (seq 0) then every device's DBIRTH (and DDEATH for offline ones). */
  private birth(): void {
    if (!this.connected || this.bdSeq === null) return;
    if (this.rebirthTimer) clearTimeout(this.rebirthTimer);
    this.rebirthTimer = undefined;
    const now = this.o.now();
    const defs: MetricDef[] = [
      { name: BDSEQ_METRIC, type: 'Int64', value: this.bdSeq },
      { name: REBIRTH_METRIC, type: 'Boolean', value: false },
      ...nodeMetrics(this.facts()),
    ];
    const views = [...this.sites].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const deviceDefs = views.map((v) => ({ v, defs: deviceMetrics(v, now) }));
    // Allocate every alias first and persist them once, before any birth uses them.
    this.nodeValues = new Map(
      defs.map((d) => [
        d.name,
        { alias: this.o.state.alias(this.key, `/${d.name}`), type: d.type, value: d.value },
      ]),
    );
    for (const { v, defs: dd } of deviceDefs)
      for (const d of dd) this.o.state.alias(this.key, `${v.id}/${d.name}`);
    this.o.state.save();

    this.seq = 0;
    this.send(
      nodeTopic(this.o.group, 'NBIRTH', this.o.node),
      now,
      defs.map((d) => ({ ...d, alias: this.nodeValues.get(d.name)!.alias, timestamp: now })),
      true,
    );
    this.devices.clear();
    for (const { v, defs: dd } of deviceDefs) this.deviceBirth(v, dd, now);
    this.birthed = true;
    this.births++;
    this.lastBirthAt = now;
    this.o.log.info(
      { bdSeq: this.bdSeq, devices: views.length, primaryHostOnline: this.primaryOnline },
      'Sparkplug births published',
    );
  }

  private deviceBirth(v: SiteView, defs: readonly MetricDef[], now: number): void {
    const metrics = new Map<string, Published>();
    for (const d of defs) {
      metrics.set(d.name, {
        alias: this.o.state.alias(this.key, `${v.id}/${d.name}`),
        type: d.type,
        value: d.value,
      });
    }
    this.o.state.save();
    this.send(
      deviceTopic(this.o.group, 'DBIRTH', this.o.node, v.id),
      now,
      defs.map((d) => ({ ...d, alias: metrics.get(d.name)!.alias, timestamp: now })),
      true,
    );
    const dev: Device = { alive: true, metrics, names: namesKey(defs), ageAt: now };
    this.devices.set(v.id, dev);
    if (!v.online) {
      this.send(deviceTopic(this.o.group, 'DDEATH', this.o.node, v.id), now, [], true);
      dev.alive = false;
    }
  }

  /** Metrics whose value differs from what was published; age metrics only when due or with others. */
  private changed(dev: Device, defs: readonly MetricDef[], now: number): OutMetric[] {
    const out: [Published, OutMetric][] = [];
    const ages: [Published, OutMetric][] = [];
    for (const d of defs) {
      const p = dev.metrics.get(d.name);
      if (!p || p.value === d.value) continue;
      const m: OutMetric = { alias: p.alias, type: p.type, value: d.value, timestamp: now };
      (AGE_METRICS.has(d.name) ? ages : out).push([p, m]);
    }
    const ageDue = this.o.ageIntervalMs > 0 && now - dev.ageAt >= this.o.ageIntervalMs;
    if (ages.length > 0 && (out.length > 0 || ageDue)) {
      out.push(...ages);
      dev.ageAt = now;
    }
    for (const [p, m] of out) p.value = m.value;
    return out.map(([, m]) => m);
  }

  private publishNodeChanges(): void {
    const now = this.o.now();
    const out: OutMetric[] = [];
    for (const d of nodeMetrics(this.facts())) {
      const p = this.nodeValues.get(d.name);
      if (!p || p.value === d.value) continue;
      p.value = d.value;
      out.push({ alias: p.alias, type: p.type, value: d.value, timestamp: now });
    }
    if (out.length > 0) this.send(nodeTopic(this.o.group, 'NDATA', this.o.node), now, out, true);
  }

  private publishChanges(): void {
    if (!this.connected) return;
    const now = this.o.now();
    this.publishNodeChanges();
    const seen = new Set<string>();
    for (const v of this.sites) {
      seen.add(v.id);
      const dev = this.devices.get(v.id);
      const defs = deviceMetrics(v, now);
      if (!dev || (!dev.alive && v.online)) {
        this.deviceBirth(v, defs, now);
        continue;
      }
      if (!dev.alive) continue; // stays dead; the next DBIRTH carries its values
      if (!v.online) {
        const out = this.changed(dev, defs, now);
        if (out.length > 0) this.send(deviceTopic(this.o.group, 'DDATA', this.o.node, v.id), now, out, true);
        this.send(deviceTopic(this.o.group, 'DDEATH', this.o.node, v.id), now, [], true);
        dev.alive = false;
        continue;
      }
      if (namesKey(defs) !== dev.names) {
        this.deviceBirth(v, defs, now); // metric set changed (stack added or removed)
        continue;
      }
      const out = this.changed(dev, defs, now);
      if (out.length > 0) this.send(deviceTopic(this.o.group, 'DDATA', this.o.node, v.id), now, out, true);
    }
    for (const [id, dev] of this.devices) {
      if (seen.has(id)) continue;
      if (dev.alive) this.send(deviceTopic(this.o.group, 'DDEATH', this.o.node, id), now, [], true);
      this.devices.delete(id);
    }
  }
}

/**
 * Prometheus metrics of one broker instance: its own prom-client Registry (never the global default
 * one, so several brokers can live in one process — tests do), and an optional loopback HTTP endpoint.
 *
 *   outpost_broker_connections{role}               gauge    authenticated connections now
 *   outpost_broker_connections_accepted_total      counter  sockets accepted (before authentication)
 *   outpost_broker_rejects_total{reason}           counter  refusals by reason (reasons.ts)
 *   outpost_broker_bytes_received_total{role}      counter  TCP payload bytes in (TLS: plaintext MQTT bytes)
 *   outpost_broker_bytes_sent_total{role}          counter
 *   outpost_broker_messages_received_total{role}   counter  PUBLISH packets in
 *   outpost_broker_messages_sent_total{role}       counter  PUBLISH packets out
 *   outpost_broker_queued_messages{client}         gauge    per persistent session (when the persistence reports it)
 *   outpost_broker_queued_bytes{client}            gauge
 *   outpost_broker_queued_messages_total           gauge    all sessions
 *   outpost_broker_queued_bytes_total              gauge
 *   outpost_broker_queue_dropped_total{client}     counter  messages dropped by the per-client queue cap
 *   outpost_broker_sessions_expired_total          counter  abandoned sessions deleted
 *   outpost_broker_crl_reloads_total{result}       counter  ok | error
 *
 * `role` is `agent|controller|scada|admin`, or `none` for bytes before authentication.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import { ROLES } from './identity.js';
import { REJECT_REASON_LIST, type RejectReason } from './reasons.js';

export type RoleLabel = (typeof ROLES)[number] | 'none';

export interface QueueSnapshot {
  readonly total: { messages: number; bytes: number };
  readonly perClient?: ReadonlyArray<{ clientId: string; messages: number; bytes: number }>;
}

/**
 * A counter by role that is bumped for every socket chunk and every PUBLISH: the hot path adds to
 * plain numbers, and prom-client gets the sums when the metric is read (a scrape, `value()`), so a
 * message costs a map update instead of a labelled prom-client increment (ADR 0008).
 */
export class RoleCounter {
  readonly metric: Counter<'role'>;
  readonly #pending = new Map<string, number>();

  constructor(name: string, help: string, registers: Registry[]) {
    const pending = this.#pending;
    this.metric = new Counter({
      name,
      help,
      labelNames: ['role'],
      registers,
      collect() {
        for (const [role, n] of pending) this.inc({ role }, n);
        pending.clear();
      },
    });
  }

  inc(role: string, n = 1): void {
    this.#pending.set(role, (this.#pending.get(role) ?? 0) + n);
  }
}

export class BrokerMetrics {
  readonly registry = new Registry();
  readonly connections: Gauge<'role'>;
  readonly accepted: Counter;
  readonly rejects: Counter<'reason'>;
  readonly bytesIn: RoleCounter;
  readonly bytesOut: RoleCounter;
  readonly messagesIn: RoleCounter;
  readonly messagesOut: RoleCounter;
  readonly queueDropped: Counter<'client'>;
  readonly sessionsExpired: Counter;
  readonly crlReloads: Counter<'result'>;
  #queues: (() => QueueSnapshot | undefined) | undefined;

  constructor() {
    const registers = [this.registry];
    this.connections = new Gauge({
      name: 'outpost_broker_connections',
      help: 'authenticated connections by role',
      labelNames: ['role'],
      registers,
    });
    for (const role of ROLES) this.connections.set({ role }, 0);
    this.accepted = new Counter({
      name: 'outpost_broker_connections_accepted_total',
      help: 'sockets accepted, before authentication',
      registers,
    });
    this.rejects = new Counter({
      name: 'outpost_broker_rejects_total',
      help: 'refused connections, subscriptions, publishes and deliveries by reason',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REJECT_REASON_LIST) this.rejects.inc({ reason }, 0);
    const byRole = (name: string, help: string) => new RoleCounter(name, help, registers);
    this.bytesIn = byRole('outpost_broker_bytes_received_total', 'bytes received from clients');
    this.bytesOut = byRole('outpost_broker_bytes_sent_total', 'bytes sent to clients');
    this.messagesIn = byRole('outpost_broker_messages_received_total', 'PUBLISH packets received');
    this.messagesOut = byRole('outpost_broker_messages_sent_total', 'PUBLISH packets sent');
    const queues = () => this.#queues?.();
    new Gauge({
      name: 'outpost_broker_queued_messages',
      help: 'messages queued for a persistent session',
      labelNames: ['client'],
      registers,
      collect() {
        this.reset();
        for (const q of queues()?.perClient ?? []) this.set({ client: q.clientId }, q.messages);
      },
    });
    new Gauge({
      name: 'outpost_broker_queued_bytes',
      help: 'bytes (topic + payload) queued for a persistent session',
      labelNames: ['client'],
      registers,
      collect() {
        this.reset();
        for (const q of queues()?.perClient ?? []) this.set({ client: q.clientId }, q.bytes);
      },
    });
    new Gauge({
      name: 'outpost_broker_queued_messages_total',
      help: 'messages queued for all persistent sessions',
      registers,
      collect() {
        this.set(queues()?.total.messages ?? 0);
      },
    });
    new Gauge({
      name: 'outpost_broker_queued_bytes_total',
      help: 'bytes queued for all persistent sessions',
      registers,
      collect() {
        this.set(queues()?.total.bytes ?? 0);
      },
    });
    this.queueDropped = new Counter({
      name: 'outpost_broker_queue_dropped_total',
      help: 'messages dropped by the per-client queue cap',
      labelNames: ['client'],
      registers,
    });
    this.sessionsExpired = new Counter({
      name: 'outpost_broker_sessions_expired_total',
      help: 'abandoned persistent sessions deleted',
      registers,
    });
    this.crlReloads = new Counter({
      name: 'outpost_broker_crl_reloads_total',
      help: 'CRL reloads by result',
      labelNames: ['result'],
      registers,
    });
  }

  /** Where queue gauges come from (the persistence's stats), read at scrape time. */
  setQueueSource(fn: (() => QueueSnapshot | undefined) | undefined): void {
    this.#queues = fn;
  }

  reject(reason: RejectReason): void {
    this.rejects.inc({ reason });
  }

  /** Current value of a counter or gauge with these labels (tests and `outpost up` status). */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const data = await metric.get();
    const match = data.values.find((v) =>
      Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want),
    );
    return match?.value ?? 0;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** `GET /metrics` (Prometheus text) and `GET /healthz`; nothing else. */
export async function startMetricsServer(
  metrics: BrokerMetrics,
  host: string,
  port: number,
): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

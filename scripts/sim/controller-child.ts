/**
 * The controller (`buildController`: REST API + SQLite store + outbox publisher + ingest) in a process
 * of its own for the fleet simulator, so that its CPU is its own and the API is called over real HTTP.
 *
 *   node --import tsx scripts/sim/controller-child.ts --data DIR --certs DIR --mqtt URL --token T
 *        [--signing KID] [--config JSON]
 *
 * IPC (parent → child, each answered with the same `id`):
 * - `{op:'enrol', id, sites: [[site, uplinkKeyB64]], group}`: bulk enrolment straight into the
 *   controller's store, in one transaction (the API enrols one site per call, each audited): each
 *   site with its uplink public key, in `group`. Not audited.
 * - `{op:'watch', id, deployment, n, timeoutMs}`: answers when `n` commands of the deployment are
 *   `applied` (or at the timeout) with the status counts and the time: when done, the commit time of
 *   the last `applied` ack (its done_at, epoch ms), else the time of the answer.
 * - `{op:'stats', id}`: publisher and ingest counters.
 * - `{op:'close'}`.
 * It sends `{op:'ready', url}` once the API listens.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { buildController } from '../../controller/src/app.js';
import { type ConfigInput, loadConfig } from '../../controller/src/config.js';
import { epochMs } from './proc.js';

export type ControllerRequest =
  | { op: 'enrol'; id: number; sites: [site: string, uplinkKeyB64: string][]; group: string }
  | { op: 'watch'; id: number; deployment: string; n: number; timeoutMs: number }
  | { op: 'stats'; id: number }
  | { op: 'close' };

export type ControllerReply =
  | { op: 'ready'; url: string }
  | { op: 'error'; message: string }
  | { op: 'enrolled'; id: number; n: number; ms: number }
  | { op: 'watched'; id: number; done: boolean; at: number; counts: Record<string, number> }
  | { op: 'stats'; id: number; stats: Record<string, unknown> };

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    certs: { type: 'string' },
    mqtt: { type: 'string' },
    token: { type: 'string' },
    signing: { type: 'string' },
    config: { type: 'string' },
  },
});

function send(m: ControllerReply): void {
  process.send?.(m);
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('controller-child.ts must be started with fork() (IPC)');
  const data = values.data;
  if (!data || !values.certs || !values.mqtt || !values.token) {
    throw new Error('--data, --certs, --mqtt and --token are required');
  }
  const extra = values.config ? (JSON.parse(values.config) as ConfigInput) : {};
  const config = loadConfig({
    overrides: {
      ...extra,
      dataDir: data,
      certsDir: values.certs,
      adminToken: values.token,
      logLevel: 'warn',
      api: { host: '127.0.0.1', port: 0 },
      mqtt: { ...extra.mqtt, url: values.mqtt },
      ...(values.signing ? { signing: { kid: values.signing } } : {}),
    } as ConfigInput,
  });
  const log = pino(
    { level: process.env['SIM_CONTROLLER_LOG'] ?? 'warn' },
    pino.destination({ dest: join(data, 'controller.log'), sync: false }),
  );
  const controller = await buildController({ config, log });
  const { url } = await controller.start();
  const store = controller.store;
  const countApplied = store.db.prepare<[string], { n: number }>(
    "SELECT COUNT(*) AS n FROM commands WHERE deployment = ? AND status = 'applied'",
  );
  // done_at is the controller's clock (Date.now()) when the ack's batch was committed.
  const lastApplied = store.db.prepare<[string], { at: number | null }>(
    "SELECT MAX(done_at) AS at FROM commands WHERE deployment = ? AND status = 'applied'",
  );
  const countAll = store.db.prepare<[string], { status: string; n: number }>(
    'SELECT status, COUNT(*) AS n FROM commands WHERE deployment = ? GROUP BY status',
  );
  const counts = (deployment: string): Record<string, number> =>
    Object.fromEntries(countAll.all(deployment).map((r) => [r.status, r.n]));

  let closing = false;
  const stop = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(1), 15_000).unref();
    try {
      await controller.close();
      log.flush();
    } finally {
      process.exit(0);
    }
  };

  process.on('message', (m: ControllerRequest) => {
    switch (m.op) {
      case 'enrol': {
        const t0 = performance.now();
        const now = store.now();
        store.tx(() => {
          if (!store.sites.groupExists(m.group)) store.sites.createGroup(m.group, 'simulated sites', now);
          for (const [site, key] of m.sites) {
            if (store.sites.row(site)) continue;
            store.sites.enrol({
              id: site,
              uplinkPub: new Uint8Array(Buffer.from(key, 'base64')),
              labels: { sim: '1' },
              groups: [m.group],
              now,
            });
          }
        });
        for (const [site] of m.sites) controller.ingest.invalidate(site);
        send({ op: 'enrolled', id: m.id, n: m.sites.length, ms: performance.now() - t0 });
        return;
      }
      case 'watch': {
        // The count reads every command of the deployment (10,000 rows at 10,000 sites) on the
        // controller's own thread: polled at most every 20 ms and at most ~2% of that thread. The time
        // reported is exact whatever the period: the commit time of the last `applied` ack (done_at).
        const until = performance.now() + m.timeoutMs;
        const poll = (): void => {
          const t0 = performance.now();
          const n = countApplied.get(m.deployment)?.n ?? 0;
          const queryMs = performance.now() - t0;
          if (n >= m.n || performance.now() >= until) {
            const done = n >= m.n;
            const last = done ? lastApplied.get(m.deployment)?.at : undefined;
            send({ op: 'watched', id: m.id, done, at: last ?? epochMs(), counts: counts(m.deployment) });
            return;
          }
          setTimeout(poll, Math.max(20, 50 * queryMs));
        };
        poll();
        return;
      }
      case 'stats':
        send({
          op: 'stats',
          id: m.id,
          stats: {
            publisher: controller.publisher.snapshot(),
            ingest: controller.ingest.stats(),
            commands: store.commands.counts(),
          },
        });
        return;
      case 'close':
        void stop();
        return;
    }
  });
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
  send({ op: 'ready', url: url! });
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  send({ op: 'error', message });
  process.stderr.write(`sim controller-child: ${message}\n`);
  process.exit(1);
});

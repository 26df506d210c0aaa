/**
 * Fleet simulator from the command line (loopback only; everything it starts is stopped at the end):
 *
 *   node --import tsx scripts/sim/run.ts [--sites 1000] [--broker durable|mosquitto]
 *        [--kind lite|memdb|real] [--workers N] [--rollouts 1] [--storm graceful|kill] [--api]
 *
 * Starts PKI, broker, controller and the fleet (world.ts), deploys the reference 3-service stack to
 * every site `--rollouts` times, optionally restarts the broker under the connected fleet, and prints
 * the timings as JSON lines.
 */
import { parseArgs } from 'node:util';
import type { SimBrokerKind } from './brokers.js';
import type { SiteKind } from './fleet-child.js';
import { percentile, reconnectStorm, rollout, startWorld } from './world.js';

const { values } = parseArgs({
  options: {
    sites: { type: 'string', default: '1000' },
    broker: { type: 'string', default: 'durable' },
    kind: { type: 'string', default: 'lite' },
    workers: { type: 'string' },
    rollouts: { type: 'string', default: '1' },
    storm: { type: 'string' },
    storms: { type: 'string', default: '1' },
    api: { type: 'boolean', default: false },
    enrol: { type: 'string', default: 'store' },
    timeout: { type: 'string', default: '300' },
    'retry-ms': { type: 'string' },
  },
});

const say = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const t = (ms: number): number => Math.round(ms);

async function main(): Promise<void> {
  const n = Number(values.sites);
  const timeoutMs = Number(values.timeout) * 1000;
  const w = await startWorld({
    broker: values.broker as SimBrokerKind,
    sites: n,
    kind: values.kind as SiteKind,
    ...(values.workers ? { workers: Number(values.workers) } : {}),
    enrol: values.enrol as 'store' | 'api',
    ...(values['retry-ms'] ? { controllerConfig: { outbox: { retryMs: Number(values['retry-ms']) } } } : {}),
    log: (line) => process.stderr.write(`sim: ${line}\n`),
  });
  try {
    const s0 = await w.fleet.stats();
    say({
      phase: 'connected',
      sites: n,
      enrolMs: t(w.enrolMs),
      connectMs: t(w.connectMs),
      fleetRssMB: t(s0.rss / 2 ** 20),
      brokerRssMB: t(w.broker.rss() / 2 ** 20),
      cpu: w.cpu(),
    });
    for (let i = 1; i <= Number(values.rollouts); i++) {
      const r = await rollout(w, { variant: i, timeoutMs, sample: values.api });
      say({
        phase: 'rollout',
        i,
        apiMs: t(r.apiMs),
        ackMs: t(r.ackMs),
        done: r.done,
        counts: r.counts,
        cpu: r.cpu,
        ...(r.api
          ? {
              sitesP50: t(percentile(r.api.sites, 50)),
              sitesP99: t(percentile(r.api.sites, 99)),
              depP50: t(percentile(r.api.deployment, 50)),
              depP99: t(percentile(r.api.deployment, 99)),
              samples: r.api.sites.length + r.api.deployment.length,
            }
          : {}),
      });
    }
    for (let k = 0; values.storm && k < Number(values.storms); k++) {
      const s = await reconnectStorm(w, {
        how: values.storm as 'graceful' | 'kill',
        variant: 100 + k,
        downMs: 2000,
        timeoutMs,
      });
      say({
        phase: 'storm',
        how: s.how,
        reconnectMs: t(s.reconnectMs),
        ackMs: t(s.ackMs),
        done: s.done,
        sessionsLost: s.sessionsLost,
        notApplied: s.notApplied,
        shownOffline: s.shownOffline,
        ...(s.shownOffline > 0 && { shownOfflineLater: s.shownOfflineLater, offline: s.offline }),
        counts: s.counts,
        stuck: s.stuck,
      });
    }
    say({ phase: 'stats', controller: await w.controller.stats() });
  } finally {
    await w.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`sim: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

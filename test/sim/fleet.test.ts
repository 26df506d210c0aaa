/**
 * The fleet simulator (scripts/sim/) end to end: a broker, the controller and 50 simulated sites, each
 * part in a process of its own, exactly as the fleet benchmark runs them. Every site acks the
 * deployment with acks signed by its own uplink key, and the controller — whose ingest verifies every
 * ack and state against the enrolled key ([ENV-UP-1]) — shows every site applied through its API.
 * Sites are enrolled through the API here (POST /v1/sites per site). Not timed.
 */
import { describe, expect, test } from 'vitest';
import { mosquittoBinary } from '../../scripts/bench/lib/brokers.js';
import type { SimBrokerKind } from '../../scripts/sim/brokers.js';
import type { SiteKind } from '../../scripts/sim/fleet-child.js';
import { reconnectStorm, rollout, startWorld, type World } from '../../scripts/sim/world.js';
import { waitFor } from '../helpers/index.js';

async function check(w: World, deployment: string, rev: number): Promise<void> {
  const n = w.sites.length;
  const d = await w.controller.api('GET', `/deployments/${deployment}`);
  expect(d.status).toBe(200);
  expect(d.body.counts).toEqual({ applied: n });
  expect(d.body.commands).toHaveLength(n);

  // Each site's acks as the controller recorded them: accepted then applied, matched to the command.
  const cmds = d.body.commands as { site: string; seq: number }[];
  for (const c of [cmds[0]!, cmds[n - 1]!]) {
    const a = await w.controller.api('GET', `/sites/${c.site}/acks`);
    expect(a.status).toBe(200);
    const acks = (a.body.acks as { st: string; matched: boolean; seq: number | null }[]).filter(
      (x) => x.seq === c.seq,
    );
    expect(acks.map((x) => [x.st, x.matched])).toEqual([
      ['applied', true],
      ['accepted', true],
    ]);
  }

  // Their signed state reached the controller too (deltas are throttled to one per 5 s per site).
  type View = { online: boolean; state: { stacks: { name: string; want: number }[] } | null };
  await waitFor(
    async () => {
      const sites = await w.controller.api('GET', `/sites?limit=${n}`);
      const all = sites.body.sites as View[];
      return (
        all.length === n &&
        all.every((s) => s.online && s.state?.stacks.find((x) => x.name === 'ref')?.want === rev)
      );
    },
    { timeoutMs: 60_000, message: 'every site online with the new revision in its state' },
  );
  // Nothing was ignored as forged, unknown or malformed.
  const stats = (await w.controller.stats()) as { ingest: { ignored: Record<string, number>; acks: number } };
  expect(stats.ingest.ignored).toEqual({});
  expect(stats.ingest.acks).toBeGreaterThanOrEqual(2 * n);
}

async function world(broker: SimBrokerKind, kind: SiteKind, sites: number): Promise<World> {
  return startWorld({ broker, sites, kind, enrol: 'api', workers: 2 });
}

describe('fleet simulator', () => {
  test('durable broker: 50 lite sites ack a deployment and the API shows every site applied', async () => {
    const w = await world('durable', 'lite', 50);
    try {
      const r = await rollout(w, { variant: 1, timeoutMs: 120_000 });
      expect(r.done).toBe(true);
      await check(w, r.deployment, r.rev);
      // The rollout ends when the last `applied` ack was committed, not when the watch next polled.
      const d = await w.controller.api('GET', `/deployments/${r.deployment}`);
      const doneAt: number[] = [];
      for (const c of d.body.commands as { site: string; seq: number }[]) {
        const cmd = await w.controller.api('GET', `/sites/${c.site}/commands/${c.seq}`);
        doneAt.push(Date.parse(cmd.body.doneAt));
      }
      expect(r.appliedAt).toBe(Math.max(...doneAt));
      // A second revision replaces the first everywhere (latest wins).
      const r2 = await rollout(w, { variant: 2, timeoutMs: 120_000 });
      expect(r2.done).toBe(true);
      await check(w, r2.deployment, r2.rev);
    } finally {
      await w.close();
    }
  }, 300_000);

  test.skipIf(!mosquittoBinary())(
    'Mosquitto: 50 lite sites ack a deployment',
    async () => {
      const w = await world('mosquitto', 'lite', 50);
      try {
        const r = await rollout(w, { variant: 1, timeoutMs: 120_000 });
        expect(r.done).toBe(true);
        await check(w, r.deployment, r.rev);
      } finally {
        await w.close();
      }
    },
    300_000,
  );

  test('real agents (createAgent, SQLite file each) in the simulator ack a deployment', async () => {
    const w = await world('durable', 'real', 10);
    try {
      const r = await rollout(w, { variant: 1, timeoutMs: 120_000 });
      expect(r.done).toBe(true);
      await check(w, r.deployment, r.rev);
    } finally {
      await w.close();
    }
  }, 300_000);

  test('sessions resume after the durable broker restarts; the revision deployed meanwhile is applied', async () => {
    const w = await world('durable', 'lite', 20);
    try {
      const r = await rollout(w, { variant: 1, timeoutMs: 120_000 });
      expect(r.done).toBe(true);
      const s = await reconnectStorm(w, { how: 'kill', variant: 2, downMs: 500, timeoutMs: 120_000 });
      expect(s.done).toBe(true);
      expect(s.notApplied).toBe(0);
      expect(s.sessionsLost).toBe(0); // I5: the broker committed every session before its CONNACK
    } finally {
      await w.close();
    }
  }, 300_000);
});

/**
 * Rollouts survive a controller restart mid-rollout (the state machine is in SQLite): an orderly
 * close-and-rebuild on the same data dir, and SIGKILL of a controller child process. After either,
 * the rollout continues where it stopped, no site gets the revision twice (one command, however
 * often it was resent: the same bytes), and failures counted before the restart still count.
 */
import { describe, expect, it } from 'vitest';
import { restartablePorts, spawnNode, waitFor } from '../helpers/index.js';
import { webCompose } from './helpers/compose.js';
import { ADMIN_TOKEN } from './helpers/keys.js';
import { type RolloutWorld, rolloutWorld, type ScriptedSite } from './helpers/rollout-world.js';

// biome-ignore lint/suspicious/noExplicitAny: test convenience over JSON bodies
type Json = any;

const IDS = ['s1', 's2', 's3', 's4', 's5', 's6', 's7', 's8'];
// Phases: [s1] [s2 s3] [s4 s5] [s6 s7] [s8]. s3 fails before the restart, s6 after it: with a
// failure threshold of 2 the rollout aborts at s6, so s8 never gets the revision.
const DEFINITION = {
  id: 'restart',
  stack: 'web',
  rev: 2,
  target: { group: 'plant' },
  strategy: { canary: { count: 1 }, batches: { size: 2 } },
  failureThreshold: { count: 2 },
  successThreshold: 0.5,
  healthSec: 1,
  deadlineSec: 60,
};
const failing = (s: ScriptedSite): void => {
  if (s.site === 's3' || s.site === 's6')
    s.behaviour = (c) => ((c.body as { rev: number }).rev === 2 ? 'rolled-back' : 'ok');
};

/** I2 at every site: each revision of web arrived in one command (one seq), resends byte-identical. */
function assertOnce(sites: readonly ScriptedSite[]): void {
  for (const s of sites) {
    expect(s.sim.rejected, s.site).toEqual([]);
    const seqsByRev = new Map<number, number[]>();
    for (const c of s.stackCommands()) {
      if (c.type !== 'stack.apply') continue;
      const rev = (c.body as { rev: number }).rev;
      seqsByRev.set(rev, [...(seqsByRev.get(rev) ?? []), c.seq]);
    }
    expect(seqsByRev.get(2)?.length ?? 0, `${s.site}: rev 2 commands`).toBeLessThanOrEqual(1);
    for (const seq of new Set(s.sim.deliveries.map((d) => d.cmd.seq))) {
      const copies = new Set(s.sim.deliveries.filter((d) => d.cmd.seq === seq).map((d) => d.bytes));
      expect(copies.size, `${s.site} seq ${seq}: one envelope`).toBe(1);
    }
  }
}

function assertOutcome(v: Json, sites: readonly ScriptedSite[]): void {
  expect(v.state).toBe('rolled-back');
  expect(v.reason).toBe('failure threshold reached: 2 failed (limit 2)');
  const outcome = Object.fromEntries(v.sites.map((s: Json) => [s.site, s.outcome]));
  expect(outcome).toMatchObject({
    s1: 'healthy',
    s2: 'healthy',
    s3: 'failed',
    s4: 'healthy',
    s5: 'healthy',
    s6: 'failed',
  });
  expect(v.sites.find((s: Json) => s.site === 's8')).toMatchObject({ seq: null, status: 'pending' });
  const s8 = sites.find((s) => s.site === 's8')!;
  expect(s8.revsReceived('web')).toEqual([1]);
  for (const s of sites.filter((x) => x.site !== 's8'))
    expect(s.revsReceived('web').at(-1), `${s.site} back on 1`).toBe(1);
  assertOnce(sites);
}

async function setup(w: RolloutWorld): Promise<ScriptedSite[]> {
  const sites: ScriptedSite[] = [];
  for (const id of IDS) {
    await w.f.enrol(id, ['plant']);
    const s = await w.site(id);
    failing(s);
    sites.push(s);
  }
  await w.f.push('web', webCompose(1));
  const d = await w.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'plant' } });
  expect(d.status).toBe(201);
  await waitFor(() => sites.every((s) => s.running('web')?.rev === 1), { message: 'baseline rev 1' });
  await waitFor(() => IDS.every((id) => w.f.controller.store.sites.get(id)?.state?.stacks[0]?.rev === 1), {
    message: 'controller saw rev 1 everywhere',
  });
  await w.f.push('web', webCompose(2));
  return sites;
}

describe('rollouts across controller restarts', () => {
  it('close and rebuild on the same data dir mid-rollout: it continues, nothing twice, thresholds still count', {
    timeout: 90_000,
  }, async () => {
    const w = await rolloutWorld();
    const sites = await setup(w);
    expect((await w.call('POST', '/v1/rollouts', DEFINITION)).status).toBe(201);
    await waitFor(async () => (await w.call('GET', '/v1/rollouts/restart')).json.phase === 2, {
      timeoutMs: 20_000,
      message: 'phase 2 reached (s3 failed in phase 1)',
    });
    expect((await w.call('GET', '/v1/rollouts/restart')).json.failures).toBe(1);
    await w.restart();
    const v = await waitFor(
      async () => {
        const r = (await w.call('GET', '/v1/rollouts/restart')).json;
        return r.state === 'rolled-back' ? r : undefined;
      },
      { timeoutMs: 30_000, message: 'rolled back after the restart' },
    );
    await waitFor(
      () => sites.filter((s) => s.site !== 's8').every((s) => s.revsReceived('web').at(-1) === 1),
      {
        message: 'rollbacks delivered',
      },
    );
    assertOutcome(v, sites);
  });

  it('SIGKILL of the controller process mid-rollout: the restarted one continues', {
    timeout: 120_000,
  }, async () => {
    const w = await rolloutWorld();
    const sites = await setup(w);
    // Hand the data dir over to a child controller (the in-process one must let go of it first).
    const dataDir = w.dataDir;
    await w.f.close();
    const [port] = (await restartablePorts(1)) as [number];
    const url = `http://127.0.0.1:${port}`;
    const spawn = async () => {
      const p = spawnNode(
        'test/controller/helpers/rollout-controller-main.ts',
        [dataDir, w.broker.url, String(port), ADMIN_TOKEN],
        {},
        { name: 'rollout-controller' },
      );
      await p.waitForOutput(/controller API listening/, { timeoutMs: 20_000 });
      return p;
    };
    const call = async (
      method: string,
      path: string,
      body?: unknown,
    ): Promise<{ status: number; json: Json }> => {
      const r = await fetch(`${url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: r.status, json: await r.json() };
    };
    const first = await spawn();
    expect((await call('POST', '/v1/rollouts', DEFINITION)).status).toBe(201);
    await waitFor(async () => (await call('GET', '/v1/rollouts/restart')).json.phase >= 2, {
      timeoutMs: 20_000,
      message: 'phase 2 reached',
    });
    await first.kill('SIGKILL');
    const second = await spawn();
    const v = await waitFor(
      async () => {
        const r = (await call('GET', '/v1/rollouts/restart')).json;
        return r.state === 'rolled-back' ? r : undefined;
      },
      // A bound, not a speed target: under a loaded CI machine the restarted controller's resends,
      // health gates and rollback took over 30 s once.
      { timeoutMs: 55_000, message: 'rolled back after SIGKILL and restart' },
    );
    await waitFor(
      () => sites.filter((s) => s.site !== 's8').every((s) => s.revsReceived('web').at(-1) === 1),
      {
        message: 'rollbacks delivered',
      },
    );
    assertOutcome(v, sites);
    await second.kill('SIGTERM');
  });
});

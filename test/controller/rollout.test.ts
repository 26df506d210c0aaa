/**
 * Staged rollouts (DESIGN §6) against simulated sites speaking the real protocol through a real
 * broker: canary first, health gate from ingested acks and state, abort on the failure threshold with
 * rollback of every touched site, offline sites, pinning, pause/approve, invalid definitions.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/index.js';
import { webCompose } from './helpers/compose.js';
import { type RolloutWorld, rolloutWorld, type ScriptedSite } from './helpers/rollout-world.js';

// biome-ignore lint/suspicious/noExplicitAny: test convenience over JSON bodies
type Json = any;

async function fleet(w: RolloutWorld, ids: string[], group = 'plant'): Promise<ScriptedSite[]> {
  const out: ScriptedSite[] = [];
  for (const id of ids) {
    await w.f.enrol(id, [group]);
    out.push(await w.site(id));
  }
  await waitFor(async () => ids.every((id) => w.f.controller.store.sites.row(id)?.online === 1), {
    message: 'sites online',
  });
  return out;
}

/** Deploys `rev` of web to every site (plain deployment) and waits until each runs it healthy. */
async function baseline(w: RolloutWorld, sites: ScriptedSite[], rev: number): Promise<void> {
  const d = await w.call('POST', '/v1/deployments', { stack: 'web', rev, target: { group: 'plant' } });
  expect(d.status, d.text).toBe(201);
  await waitFor(
    () =>
      sites.every((s) => {
        const st = w.f.controller.store.sites.get(s.site)?.state?.stacks.find((x) => x.name === 'web');
        return st?.rev === rev && st.h === 'healthy';
      }),
    { message: `every site runs web@${rev}` },
  );
}

const show = async (w: RolloutWorld, id: string): Promise<Json> => {
  const r = await w.call('GET', `/v1/rollouts/${id}`);
  expect(r.status, r.text).toBe(200);
  return r.json;
};

const until = (w: RolloutWorld, id: string, state: string | string[], timeoutMs = 15_000) =>
  waitFor(
    async () => {
      const v = await show(w, id);
      return ([] as string[]).concat(state).includes(v.state) ? v : undefined;
    },
    { timeoutMs, message: `rollout ${id} ${String(state)}` },
  );

describe('staged rollouts', () => {
  it('a failing canary aborts the rollout: no other site ever gets the revision, the canary gets its previous one back', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    const ids = ['p01', 'p02', 'p03', 'p04', 'p05', 'p06'];
    const sites = await fleet(w, ids);
    await w.f.push('web', webCompose(1));
    await baseline(w, sites, 1);
    await w.f.push('web', webCompose(2));
    // The canary (first site in id order) fails its local health gate and rolls back.
    sites[0]!.behaviour = (c) => ((c.body as { rev: number }).rev === 2 ? 'rolled-back' : 'ok');

    const r = await w.call('POST', '/v1/rollouts', {
      id: 'web-2',
      stack: 'web',
      rev: 2,
      target: { group: 'plant' },
      strategy: { canary: { count: 1 }, batches: { size: 2 } },
      healthSec: 0,
      deadlineSec: 30,
    });
    expect(r.status, r.text).toBe(201);
    expect(r.json.phases.map((p: Json) => p.size)).toEqual([1, 2, 2, 1]);

    const v = await until(w, 'web-2', 'rolled-back');
    expect(v.reason).toMatch(/failure threshold/);
    expect(v.sites[0]).toMatchObject({ site: 'p01', outcome: 'failed', status: 'rolled-back', prevRev: 1 });
    expect(v.sites[0].reason).toMatch(/rolled-back/);
    for (const s of v.sites.slice(1)) expect(s).toMatchObject({ status: 'pending', seq: null });

    // The canary received rev 2 and then its previous revision 1 (a signed stack.apply through the outbox).
    await waitFor(() => sites[0]!.revsReceived('web').join() === '1,2,1', { message: 'canary rolled back' });
    expect(sites[0]!.running('web')).toMatchObject({ rev: 1, h: 'healthy' });
    // No site outside the canary ever received revision 2: every command it got is the baseline.
    for (const s of sites.slice(1)) {
      expect(s.revsReceived('web'), s.site).toEqual([1]);
      expect(s.sim.rejected).toEqual([]);
    }
    // Retained status for SCADA.
    await waitFor(() => w.statuses.get('web-2')?.at(-1)?.['state'] === 'rolled-back', {
      message: 'retained status',
    });
    expect(w.statuses.get('web-2')!.at(-1)).toMatchObject({
      v: 1,
      rollout: 'web-2',
      stack: 'web',
      rev: 2,
      counts: { targeted: 6, rolledBack: 1, pending: 5 },
    });
    // Audited.
    const audit = (await w.call('GET', '/v1/audit?limit=50')).json;
    expect(JSON.stringify(audit)).toContain('rollout.create');
  });

  it('a canary that reports the revision unhealthy after applying it fails; sites without a previous revision get stack.remove', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    const sites = await fleet(w, ['u1', 'u2', 'u3']);
    await w.f.push('web', webCompose(1));
    sites[0]!.behaviour = () => 'unhealthy';
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'fresh',
      stack: 'web',
      target: { sites: ['u1', 'u2', 'u3'] },
      healthSec: 1,
      deadlineSec: 30,
    });
    expect(r.status, r.text).toBe(201);
    const v = await until(w, 'fresh', 'rolled-back');
    expect(v.sites[0]).toMatchObject({ outcome: 'failed', reason: 'unhealthy after apply', prevRev: null });
    expect(v.sites[0].rollback).toMatchObject({ type: 'stack.remove', status: 'applied' });
    expect(sites[0]!.stackCommands().map((c) => c.type)).toEqual(['stack.apply', 'stack.remove']);
    expect(sites[0]!.running('web')).toBeUndefined();
    expect(sites[1]!.stackCommands()).toEqual([]);
    expect(sites[2]!.stackCommands()).toEqual([]);
  });

  it('goes through canary and exponential batches with a health gate; skips pinned sites', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    const ids = ['e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8'];
    const sites = await fleet(w, ids);
    await w.f.push('web', webCompose(1));
    await baseline(w, sites, 1);
    await w.f.push('web', webCompose(2));
    expect((await w.call('PUT', '/v1/sites/e8/pins/web', { rev: 1 })).status).toBeLessThan(300);
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'exp',
      stack: 'web',
      target: { group: 'plant' },
      strategy: { canary: { percent: 10 }, batches: { exponential: { factor: 2 } } },
      healthSec: 1,
      deadlineSec: 30,
    });
    expect(r.status, r.text).toBe(201);
    // 7 planned sites (e8 is pinned): canary 1, then 1, 2, 3 (capped).
    expect(r.json.phases.map((p: Json) => p.size)).toEqual([1, 1, 2, 3]);
    const v = await until(w, 'exp', 'completed', 30_000);
    expect(v.counts).toEqual({ healthy: 7, skipped: 1 });
    expect(v.sites.find((s: Json) => s.site === 'e8')).toMatchObject({
      status: 'skipped',
      reason: 'pinned to web@1',
    });
    for (const s of sites.slice(0, 7)) expect(s.revsReceived('web'), s.site).toEqual([1, 2]);
    expect(sites[7]!.revsReceived('web')).toEqual([1]);
    // Health gate: every site was healthy at least healthSec before its outcome.
    for (const s of v.sites.slice(0, 7)) {
      expect(Date.parse(s.doneAt) - Date.parse(s.healthySince)).toBeGreaterThanOrEqual(1000);
    }
  });

  it('offline sites get the revision when they reconnect within the deadline (offline: wait), or fail at it', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    const sites = await fleet(w, ['o1', 'o2', 'o3', 'o4']);
    await w.f.push('web', webCompose(1));
    await w.f.push('web', webCompose(2));
    await sites[1]!.goOffline(); // back within the deadline
    await sites[2]!.goOffline(); // never back
    await waitFor(() => w.f.controller.store.sites.row('o3')?.online === 0, { message: 'o3 offline' });
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'off',
      stack: 'web',
      rev: 2,
      target: { group: 'plant' },
      strategy: { canary: { count: 1 }, batches: { size: 3 } },
      failureThreshold: { count: 2 },
      successThreshold: 0.5,
      healthSec: 0,
      deadlineSec: 6,
    });
    expect(r.status, r.text).toBe(201);
    await waitFor(async () => (await show(w, 'off')).counts.offline === 2, {
      message: 'two offline in batch 1',
    });
    await sites[1]!.connect();
    const v = await until(w, 'off', 'completed', 30_000);
    expect(v.sites.map((s: Json) => [s.site, s.outcome])).toEqual([
      ['o1', 'healthy'],
      ['o2', 'healthy'],
      ['o3', 'failed'],
      ['o4', 'healthy'],
    ]);
    expect(v.sites[2].reason).toMatch(/deadline \(6s\) passed while offline/);
    expect(sites[1]!.revsReceived('web')).toEqual([2]);
    expect(v.failures).toBe(1);
  });

  it('offline: skip leaves offline sites out and counts them as skipped', { timeout: 60_000 }, async () => {
    const w = await rolloutWorld();
    const sites = await fleet(w, ['k1', 'k2', 'k3']);
    await w.f.push('web', webCompose(1));
    await sites[2]!.goOffline();
    await waitFor(() => w.f.controller.store.sites.row('k3')?.online === 0, { message: 'k3 offline' });
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'skip',
      stack: 'web',
      target: { group: 'plant' },
      offline: 'skip',
      healthSec: 0,
      deadlineSec: 20,
    });
    expect(r.status, r.text).toBe(201);
    const v = await until(w, 'skip', 'completed');
    expect(v.counts).toEqual({ healthy: 2, skipped: 1 });
    expect(v.sites[2]).toMatchObject({ site: 'k3', reason: 'offline when its phase started', seq: null });
    await sites[2]!.connect();
    await new Promise((r) => setTimeout(r, 500));
    expect(sites[2]!.stackCommands()).toEqual([]);
  });

  it('manual approval between phases; pause and resume; abort by API rolls back the touched sites', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    const sites = await fleet(w, ['a1', 'a2', 'a3', 'a4']);
    await w.f.push('web', webCompose(1));
    await baseline(w, sites, 1);
    await w.f.push('web', webCompose(2));
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'appr',
      stack: 'web',
      target: { group: 'plant' },
      strategy: { canary: { count: 1 }, batches: { size: 1 } },
      approval: true,
      healthSec: 0,
      deadlineSec: 30,
    });
    expect(r.status, r.text).toBe(201);
    await until(w, 'appr', 'awaiting-approval');
    expect((await w.call('POST', '/v1/rollouts/appr/resume', {})).json.code).toBe('rollout-state');
    expect((await w.call('POST', '/v1/rollouts/appr/pause', {})).json.state).toBe('paused');
    const resumed = await w.call('POST', '/v1/rollouts/appr/resume');
    expect(resumed.status, resumed.text).toBe(200);
    expect(resumed.json.state).toBe('awaiting-approval');
    expect((await w.call('POST', '/v1/rollouts/appr/approve', {})).status).toBe(200);
    await waitFor(async () => (await show(w, 'appr')).phase === 2, { message: 'second batch done' });
    expect(sites[2]!.revsReceived('web')).toEqual([1]);
    const a = await w.call('POST', '/v1/rollouts/appr/abort', { reason: 'operator says no' });
    expect(a.status, a.text).toBe(200);
    const v = await until(w, 'appr', 'rolled-back');
    expect(v.reason).toBe('aborted by admin: operator says no');
    await waitFor(() => sites[1]!.revsReceived('web').join() === '1,2,1', { message: 'a2 back on 1' });
    expect(sites[0]!.revsReceived('web')).toEqual([1, 2, 1]);
    expect(sites[2]!.revsReceived('web')).toEqual([1]);
    expect(sites[3]!.revsReceived('web')).toEqual([1]);
    expect((await w.call('POST', '/v1/rollouts/appr/abort', {})).status).toBe(409);
  });

  it('invalid definitions get clear problem+json errors and change nothing', {
    timeout: 30_000,
  }, async () => {
    const w = await rolloutWorld();
    await fleet(w, ['v1', 'v2']);
    await w.f.push('web', webCompose(1));
    const auditBefore = w.f.controller.store.db
      .prepare("SELECT COUNT(*) AS n FROM audit WHERE outcome = 'ok'")
      .get();
    const base = { stack: 'web', target: { group: 'plant' } };
    const cases: [unknown, number, string, RegExp][] = [
      [{ ...base, successThreshold: 1.5 }, 400, 'invalid-request', /successThreshold/],
      [{ ...base, successThreshold: 0 }, 400, 'invalid-request', /successThreshold/],
      [{ ...base, failureThreshold: { percent: 120 } }, 400, 'invalid-request', /failureThreshold\.percent/],
      [{ ...base, failureThreshold: { count: 0 } }, 400, 'invalid-request', /failureThreshold\.count/],
      [{ ...base, failureThreshold: { count: 1, percent: 5 } }, 400, 'invalid-request', /failureThreshold/],
      [{ ...base, strategy: { canary: { count: 0 } } }, 400, 'invalid-request', /canary\.count/],
      [{ ...base, healthSec: 600, deadlineSec: 60 }, 400, 'bad-rollout', /healthSec/],
      [{ ...base, target: {} }, 400, 'invalid-request', /target/],
      [{ ...base, target: { sites: [] } }, 400, 'invalid-request', /target\.sites/],
      [{ ...base, target: { selector: 'tier=none' } }, 422, 'empty-target', /matches no/],
      [{ ...base, target: { group: 'nope' } }, 404, 'unknown-group', /nope/],
      [{ ...base, rev: 9 }, 404, 'unknown-revision', /revision 9/],
      [{ ...base, stack: 'nope' }, 404, 'unknown-stack', /nope/],
      [{ ...base, offline: 'later' }, 400, 'invalid-request', /offline/],
      [{ ...base, surprise: 1 }, 400, 'invalid-request', /surprise|additional/i],
    ];
    for (const [body, status, code, detail] of cases) {
      const r = await w.call('POST', '/v1/rollouts', body);
      expect(r.status, `${JSON.stringify(body)}: ${r.text}`).toBe(status);
      expect(r.contentType).toContain('application/problem+json');
      expect(r.json.code, JSON.stringify(body)).toBe(code);
      expect(`${r.json.detail} ${JSON.stringify(r.json.errors ?? [])}`).toMatch(detail);
    }
    expect((await w.call('GET', '/v1/rollouts')).json.rollouts).toEqual([]);
    expect(w.f.controller.store.commands.counts()).toEqual({});
    expect(
      w.f.controller.store.db.prepare("SELECT COUNT(*) AS n FROM audit WHERE outcome = 'ok'").get(),
    ).toEqual(auditBefore);
    expect((await w.call('GET', '/v1/rollouts/nope')).json.code).toBe('unknown-rollout');
    // A second active rollout of the same stack over the same sites is refused.
    expect((await w.call('POST', '/v1/rollouts', { ...base, id: 'one', approval: true })).status).toBe(201);
    const dup = await w.call('POST', '/v1/rollouts', { ...base, id: 'one' });
    expect([dup.status, dup.json.code]).toEqual([409, 'rollout-exists']);
    const clash = await w.call('POST', '/v1/rollouts', { ...base, id: 'two' });
    expect([clash.status, clash.json.code]).toEqual([409, 'rollout-conflict']);
  });
});

/**
 * Governance (DESIGN §5): roles admin/operator/viewer scoped to site groups; viewers read only;
 * operators deploy only to sites all within their groups; every refusal lands in the audit log.
 */
import { describe, expect, it } from 'vitest';
import { verifyChain } from '../../controller/src/audit.js';
import { decode } from '../../protocol/src/index.js';
import { tmpDir } from '../helpers/index.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, makeController } from './helpers/fixture.js';

async function setup(): Promise<{ f: Fixture; viewer: string; opA: string; opAll: string }> {
  const f = await makeController();
  await f.enrol('a1', ['grp-a'], { zone: 'x' });
  await f.enrol('a2', ['grp-a']);
  await f.enrol('b1', ['grp-b'], { zone: 'x' });
  await f.enrol('ab', ['grp-a', 'grp-b']);
  await f.push('web', webCompose(1));
  const token = async (name: string, role: string, groups: string[]): Promise<string> => {
    expect((await f.call('POST', '/v1/users', { name, role, groups })).status).toBe(201);
    const t = await f.call('POST', `/v1/users/${name}/tokens`, { description: 'test' });
    expect(t.status).toBe(201);
    expect(t.json.token).toMatch(/^opt_[0-9a-f]{12}_/);
    return t.json.token as string;
  };
  return {
    f,
    viewer: await token('vera', 'viewer', ['grp-a']),
    opA: await token('otto', 'operator', ['grp-a']),
    opAll: await token('olga', 'operator', ['*']),
  };
}

const deploy = (f: Fixture, token: string, target: unknown) =>
  f.call('POST', '/v1/deployments', { stack: 'web', target }, { token });

function lastAudit(f: Fixture) {
  const all = f.controller.store.audit.list(0, 10_000);
  return all[all.length - 1]!;
}

describe('RBAC', () => {
  it('a viewer reads its groups but cannot deploy; the refusal is audited', async () => {
    const { f, viewer } = await setup();
    const sites = await f.call('GET', '/v1/sites', undefined, { token: viewer });
    expect(sites.status).toBe(200);
    expect(sites.json.sites.map((s: { id: string }) => s.id)).toEqual(['a1', 'a2', 'ab']);
    expect((await f.call('GET', '/v1/sites/b1', undefined, { token: viewer })).json.code).toBe(
      'forbidden-scope',
    );

    const r = await deploy(f, viewer, { group: 'grp-a' });
    expect(r.status).toBe(403);
    expect(r.json.code).toBe('forbidden');
    expect(f.controller.store.commands.counts()).toEqual({});
    expect(lastAudit(f)).toMatchObject({
      actor: 'vera',
      action: 'deployment.create',
      outcome: 'denied:forbidden',
    });
    for (const [method, url, body] of [
      ['POST', '/v1/stacks/web/revisions', { compose: webCompose(2) }],
      ['PUT', '/v1/sites/a1/pins/web', { rev: 1 }],
      ['POST', '/v1/users', { name: 'x', role: 'admin', groups: ['*'] }],
    ] as const) {
      expect((await f.call(method, url, body, { token: viewer })).status).toBe(403);
      expect(lastAudit(f).outcome).toBe('denied:forbidden');
    }
  });

  it('an operator scoped to group A deploys to A but cannot touch B, even partly; refusals audited', async () => {
    const { f, opA } = await setup();
    const ok = await deploy(f, opA, { group: 'grp-a' });
    expect(ok.status, ok.text).toBe(201);
    expect(ok.json.commands.map((c: { site: string }) => c.site)).toEqual(['a1', 'a2', 'ab']);
    expect(lastAudit(f)).toMatchObject({ actor: 'otto', action: 'deployment.create', outcome: 'ok' });
    const counts = f.controller.store.commands.counts();

    for (const target of [{ group: 'grp-b' }, { sites: ['a1', 'b1'] }, { selector: 'zone=x' }]) {
      const r = await deploy(f, opA, target);
      expect(r.status, JSON.stringify(target)).toBe(403);
      expect(r.json.code).toBe('forbidden-scope');
      expect(r.json.detail).toContain('b1');
      expect(lastAudit(f)).toMatchObject({
        actor: 'otto',
        action: 'deployment.create',
        outcome: 'denied:forbidden-scope',
      });
    }
    expect(f.controller.store.commands.counts()).toEqual(counts);
    expect(
      (await f.call('PUT', '/v1/sites/b1/overrides/web', { env: { A: '1' } }, { token: opA })).json.code,
    ).toBe('forbidden-scope');
    expect(
      (await f.call('POST', '/v1/sites/b1/commands', { type: 'state.request' }, { token: opA })).json.code,
    ).toBe('forbidden-scope');
    expect((await f.call('GET', '/v1/sites/b1/commands', undefined, { token: opA })).status).toBe(403);
    // Administration stays with admins.
    expect((await f.call('POST', '/v1/groups', { name: 'c' }, { token: opA })).json.code).toBe('forbidden');
    expect(verifyChain(f.controller.store.db)).toMatchObject({ ok: true });
  });

  it('an operator with * scope deploys anywhere; admins manage users and tokens', async () => {
    const { f, opAll } = await setup();
    expect((await deploy(f, opAll, { group: 'grp-b' })).status).toBe(201);
    const who = await f.call('GET', '/v1/whoami', undefined, { token: opAll });
    expect(who.json).toEqual({ name: 'olga', role: 'operator', groups: ['*'] });
    // Revoke: the token stops working at once.
    const tokens = (await f.call('GET', '/v1/users/olga/tokens')).json.tokens;
    expect(tokens).toHaveLength(1);
    expect(tokens[0].lastUsedAt === null || typeof tokens[0].lastUsedAt === 'string').toBe(true);
    expect((await f.call('DELETE', `/v1/tokens/${tokens[0].id}`)).status).toBe(204);
    expect((await f.call('GET', '/v1/whoami', undefined, { token: opAll })).status).toBe(401);
    expect(lastAudit(f)).toMatchObject({ actor: 'anonymous', outcome: 'denied:unauthorized' });
    // Disabled users are refused too.
    const t = (await f.call('POST', '/v1/users/otto/tokens', {})).json.token;
    expect((await f.call('PATCH', '/v1/users/otto', { disabled: true })).status).toBe(200);
    expect((await f.call('GET', '/v1/whoami', undefined, { token: t })).status).toBe(401);
    // Tokens are stored hashed only.
    const stored = f.controller.store.db.prepare('SELECT hash FROM tokens').all() as { hash: string }[];
    expect(stored.every((r) => /^[0-9a-f]{64}$/.test(r.hash) && r.hash !== t)).toBe(true);
  });

  it('critical revisions need an admin approval signed by the approver key', async () => {
    const f = await makeController({ approver: true });
    await f.enrol('p1', ['grp-a']);
    const compose = `services:\n  agent:\n    image: r.local/probe@sha256:${'c'.repeat(64)}\n    privileged: true\n    network_mode: host\n`;
    const push = await f.call('POST', '/v1/stacks/probe/revisions', { compose });
    expect(push.json.revision.critical).toEqual(['agent: privileged', 'agent: host network']);
    const refused = await f.call('POST', '/v1/deployments', { stack: 'probe', target: { sites: ['p1'] } });
    expect(refused.status).toBe(409);
    expect(refused.json.code).toBe('approval-required');
    expect(f.controller.store.commands.counts()).toEqual({});
    const ok = await f.call('POST', '/v1/deployments', {
      stack: 'probe',
      target: { sites: ['p1'] },
      approve: true,
    });
    expect(ok.status, ok.text).toBe(201);
    const body = decode(new Uint8Array(f.controller.store.commands.get('p1', 1)!.body)) as {
      appr?: Uint8Array[];
    };
    expect(body.appr).toHaveLength(1);
  });
});

describe('bootstrap admin', () => {
  it('prints a generated token once; a configured token replaces the previous configured one', async () => {
    const dataDir = tmpDir('boot');
    const first = await makeController({ dataDir, config: { adminToken: undefined } });
    const generated = first.controller.bootstrapToken;
    expect(generated).toMatch(/^opt_[0-9a-f]{12}_/);
    expect((await first.call('GET', '/v1/whoami', undefined, { token: generated! })).json).toMatchObject({
      name: 'admin',
      role: 'admin',
      groups: ['*'],
    });
    await first.close();

    const again = await makeController({ dataDir, config: { adminToken: undefined } });
    expect(again.controller.bootstrapToken).toBeUndefined();
    expect((await again.call('GET', '/v1/whoami', undefined, { token: generated! })).status).toBe(200);
    await again.close();

    const a = 'configured-token-a-0123456789abcdef';
    const b = 'configured-token-b-0123456789abcdef';
    const withA = await makeController({ dataDir, config: { adminToken: a } });
    expect((await withA.call('GET', '/v1/whoami', undefined, { token: a })).status).toBe(200);
    await withA.close();
    const withB = await makeController({ dataDir, config: { adminToken: b } });
    expect((await withB.call('GET', '/v1/whoami', undefined, { token: b })).status).toBe(200);
    expect((await withB.call('GET', '/v1/whoami', undefined, { token: a })).status).toBe(401);
    expect((await withB.call('GET', '/v1/whoami', undefined, { token: generated! })).status).toBe(200);
    expect(verifyChain(withB.controller.store.db)).toMatchObject({ ok: true });
  });
});

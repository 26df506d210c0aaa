/**
 * The REST API through fastify inject(): Compose push, groups, enrolment, deployments, listings,
 * OpenAPI, and problem+json for bad input that changes nothing (I9).
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { certsLayout } from '../../certs/src/layout.js';
import { verifyChain } from '../../controller/src/audit.js';
import { canonicalJson, sha256Hex } from '../../controller/src/canonical-json.js';
import { FLUSH_MAX } from '../../controller/src/ingest.js';
import {
  createSigner,
  decode,
  decodeSpec,
  encodeTrustRoot,
  type StackApply,
} from '../../protocol/src/index.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, makeController } from './helpers/fixture.js';
import { seedOf, siteSigner } from './helpers/keys.js';

const key = (site: string): string => Buffer.from(siteSigner(site).publicKey).toString('base64');

async function enrolFleet(f: Fixture): Promise<void> {
  for (const g of ['north', 'south'])
    expect((await f.call('POST', '/v1/groups', { name: g })).status).toBe(201);
  for (const [id, group, region] of [
    ['n1', 'north', 'north'],
    ['n2', 'north', 'north'],
    ['s1', 'south', 'south'],
  ] as const) {
    const r = await f.call('POST', '/v1/sites', {
      id,
      uplinkKey: key(id),
      groups: [group],
      labels: { region, tier: 'edge' },
    });
    expect(r.status, r.text).toBe(201);
  }
}

/** Digest of every domain table except the audit log (which records refusals by design). */
function domainDigest(f: Fixture): string {
  const db = f.controller.store.db;
  const tables = [
    'sites',
    'groups',
    'site_groups',
    'stacks',
    'stack_revisions',
    'site_overrides',
    'site_pins',
    'deployments',
    'commands',
    'acks',
    'users',
    'tokens',
  ];
  return sha256Hex(
    canonicalJson(Object.fromEntries(tables.map((t) => [t, db.prepare(`SELECT * FROM ${t}`).all()]))),
  );
}

function auditCount(f: Fixture): number {
  return (f.controller.store.db.prepare('SELECT COUNT(*) AS n FROM audit').get() as { n: number }).n;
}

describe('API', () => {
  it('pushes Compose, deploys to a group and lists the result (I1: commands committed before 201)', async () => {
    const f = await makeController();
    await enrolFleet(f);

    const push = await f.call('POST', '/v1/stacks/web/revisions', { compose: webCompose(1) });
    expect(push.status, push.text).toBe(201);
    expect(push.json.revision).toMatchObject({ stack: 'web', rev: 1, critical: [], allowTags: false });
    expect(push.json.revision.digest).toMatch(/^[0-9a-f]{64}$/);

    // Same content, other formatting: same canonical spec, no new revision.
    const again = await f.call(
      'POST',
      '/v1/stacks/web/revisions',
      `# comment\n${webCompose(1).replace('restart: unless-stopped', 'restart: "unless-stopped"')}`,
      {
        contentType: 'application/yaml',
      },
    );
    expect(again.status, again.text).toBe(200);
    expect(again.json).toMatchObject({
      unchanged: true,
      revision: { rev: 1, digest: push.json.revision.digest },
    });

    const dep = await f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'north' } });
    expect(dep.status, dep.text).toBe(201);
    expect(dep.json.commands.map((c: { site: string }) => c.site)).toEqual(['n1', 'n2']);
    expect(dep.json.counts).toEqual({ pending: 2 });

    // The command row holds the revision's exact spec bytes, unsigned until the publisher issues it.
    const row = f.controller.store.commands.get('n1', 1)!;
    expect(row.status).toBe('pending');
    const body = decode(new Uint8Array(row.body)) as StackApply;
    const rev = f.controller.store.stacks.revision('web', 1)!;
    expect(Buffer.from(body.spec).equals(Buffer.from(rev.spec))).toBe(true);
    expect(decodeSpec(body.spec, body.z === true).svc['web']?.env).toEqual({ REV: '1' });

    const list = await f.call('GET', '/v1/sites?group=north');
    expect(list.status).toBe(200);
    expect(list.json.sites.map((s: { id: string }) => s.id)).toEqual(['n1', 'n2']);
    expect(list.json.sites[0]).toMatchObject({
      online: null,
      seq: { allocated: 1, issued: 0 },
      labels: { region: 'north' },
    });

    const cmds = await f.call('GET', '/v1/sites/n2/commands');
    expect(cmds.json.commands).toHaveLength(1);
    expect(cmds.json.commands[0]).toMatchObject({
      seq: 1,
      type: 'stack.apply',
      stack: 'web',
      rev: 1,
      status: 'pending',
      deployment: dep.json.id,
    });

    const byId = await f.call('GET', `/v1/deployments/${dep.json.id}`);
    expect(byId.json).toMatchObject({ id: dep.json.id, stack: 'web', rev: 1, target: { group: 'north' } });

    const sel = await f.call('POST', '/v1/deployments', {
      stack: 'web',
      target: { selector: 'region=south,tier=edge' },
    });
    expect(sel.json.commands.map((c: { site: string }) => c.site)).toEqual(['s1']);

    const spec = await f.call('GET', '/v1/stacks/web/revisions/1');
    expect(spec.json.spec.svc.web).toMatchObject({
      img: 'registry.local/acme/web',
      ports: ['8080:80'],
      rst: 'unless-stopped',
    });
    expect(spec.json.spec.svc.web.dig).toMatch(/^sha256:[0-9a-f]{64}$/);
    const src = await f.call('GET', '/v1/stacks/web/revisions/1/compose');
    expect(src.contentType).toContain('application/yaml');
    expect(src.text).toBe(webCompose(1));

    expect(verifyChain(f.controller.store.db)).toMatchObject({ ok: true });
    const actions = f.controller.store.audit.list(0, 100).map((e) => `${e.action}:${e.outcome}`);
    expect(actions).toEqual(
      expect.arrayContaining(['stack.push:ok', 'deployment.create:ok', 'site.enrol:ok', 'group.create:ok']),
    );
  });

  it('a newer revision collapses the older pending one at each site (I4); seqs are never reused', async () => {
    const f = await makeController();
    await enrolFleet(f);
    for (let n = 1; n <= 3; n++) {
      await f.call('POST', '/v1/stacks/web/revisions', { compose: webCompose(n) });
      expect(
        (await f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['n1'] } })).status,
      ).toBe(201);
    }
    const cmds = (await f.call('GET', '/v1/sites/n1/commands')).json.commands;
    expect(cmds.map((c: { seq: number; status: string; rev: number }) => [c.seq, c.rev, c.status])).toEqual([
      [3, 3, 'pending'],
      [2, 2, 'superseded'],
      [1, 1, 'superseded'],
    ]);
    expect(cmds[1].supersededBy).toBe(3);
    const cancel = await f.call('POST', '/v1/sites/n1/commands/3/cancel');
    expect(cancel.json.status).toBe('cancelled');
    expect((await f.call('POST', '/v1/sites/n1/commands/3/cancel')).json.code).toBe('not-cancellable');
    await f.call('POST', '/v1/deployments', { stack: 'web', rev: 1, target: { sites: ['n1'] } });
    expect(f.controller.store.sites.row('n1')!.seq_alloc).toBe(4);
  });

  it('per-site env overrides are merged into that site only; pinned sites are skipped', async () => {
    const f = await makeController();
    await enrolFleet(f);
    await f.call('POST', '/v1/stacks/web/revisions', { compose: webCompose(1) });
    await f.call('POST', '/v1/stacks/web/revisions', { compose: webCompose(2) });
    const o = await f.call('PUT', '/v1/sites/n1/overrides/web', {
      env: { PLANT: 'n1' },
      services: { web: { REV: 'x' } },
    });
    expect(o.status, o.text).toBe(200);
    expect((await f.call('PUT', '/v1/sites/n2/pins/web', { rev: 1 })).status).toBe(200);
    const dep = await f.call('POST', '/v1/deployments', { stack: 'web', rev: 2, target: { group: 'north' } });
    expect(dep.json.commands.map((c: { site: string }) => c.site)).toEqual(['n1']);
    expect(dep.json.skipped).toEqual([{ site: 'n2', reason: 'pinned', pinnedRev: 1 }]);
    const body = decode(new Uint8Array(f.controller.store.commands.get('n1', 1)!.body)) as StackApply;
    expect(decodeSpec(body.spec, body.z === true).svc['web']?.env).toEqual({ PLANT: 'n1', REV: 'x' });
    const cmd = (await f.call('GET', '/v1/sites/n1/commands/1')).json;
    expect(cmd.specDigest).not.toBe(f.controller.store.stacks.revision('web', 2)!.digest);
    // The pinned revision itself still deploys to the pinned site.
    const pinnedDep = await f.call('POST', '/v1/deployments', {
      stack: 'web',
      rev: 1,
      target: { sites: ['n2'] },
    });
    expect(pinnedDep.json.commands).toHaveLength(1);
  });

  it('reports a site silent for 3 heartbeat intervals as stale and offline ([OUT-9])', async () => {
    let clock = Date.now();
    const f = await makeController({ now: () => clock, config: { outbox: { heartbeatSec: 60 } } });
    await f.enrol('q1');
    const status = { v: 1, site: 'q1', online: true, ts: new Date(clock).toISOString() };
    f.controller.ingest.handle('outpost/v1/site/q1/status', Buffer.from(JSON.stringify(status)));
    f.controller.ingest.flush();
    expect((await f.call('GET', '/v1/sites/q1')).json).toMatchObject({ online: true, stale: false, age: 0 });
    clock += 3 * 60_000 + 61_000;
    expect((await f.call('GET', '/v1/sites/q1')).json).toMatchObject({
      online: false,
      stale: true,
      status: { online: true },
    });
    expect(
      (await f.call('GET', '/v1/sites?online=false')).json.sites.map((x: { id: string }) => x.id),
    ).toEqual(['q1']);
  });

  it('commits a burst of uplink messages in chunks of FLUSH_MAX, yielding the event loop between them ([OUT-8])', async () => {
    const f = await makeController();
    await f.enrol('b1');
    const n = FLUSH_MAX * 2 + 100;
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    for (let i = 0; i < n; i++) {
      const status = { v: 1, site: 'b1', online: true, ts: new Date(t0 + i * 1000).toISOString() };
      f.controller.ingest.handle('outpost/v1/site/b1/status', Buffer.from(JSON.stringify(status)));
    }
    const seen = () => (f.controller.store.sites.get('b1')?.status as { ts?: string } | undefined)?.ts;
    expect(seen()).toBeUndefined();
    // One turn of the event loop commits the first chunk only: the API gets its turn in between.
    await new Promise((r) => setImmediate(r));
    expect(seen()).toBe(new Date(t0 + (FLUSH_MAX - 1) * 1000).toISOString());
    await new Promise((r) => setImmediate(r));
    expect(seen()).toBe(new Date(t0 + (2 * FLUSH_MAX - 1) * 1000).toISOString());
    await new Promise((r) => setImmediate(r));
    expect(seen()).toBe(new Date(t0 + (n - 1) * 1000).toISOString());
  });

  describe('bad input gets problem+json and changes nothing (I9)', () => {
    const cases: [string, string, string, unknown, number, string, RegExp?][] = [
      [
        'invalid Compose',
        'POST',
        '/v1/stacks/web/revisions',
        {
          compose:
            'services:\n  web:\n    image: nginx:latest\n    ports: ["80", "1-2:1-2"]\n    cap_add: [NET_ADMIN]\n',
        },
        422,
        'invalid-compose',
        /services\.web\.image/,
      ],
      [
        'YAML syntax error',
        'POST',
        '/v1/stacks/web/revisions',
        { compose: 'services: [unclosed' },
        422,
        'invalid-compose',
      ],
      [
        'unknown body field',
        'POST',
        '/v1/sites',
        { id: 'x1', uplinkKey: key('x1'), colour: 'red' },
        400,
        'invalid-request',
        /colour|Unexpected property/,
      ],
      [
        'unknown target field',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { sites: ['n1'], extra: 1 } },
        400,
        'invalid-request',
      ],
      [
        'unknown site in target',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { sites: ['n1', 'ghost'] } },
        404,
        'unknown-site',
        /ghost/,
      ],
      [
        'unknown group',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { group: 'west' } },
        404,
        'unknown-group',
      ],
      [
        'empty group',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { group: 'empty' } },
        422,
        'empty-target',
      ],
      [
        'unknown stack',
        'POST',
        '/v1/deployments',
        { stack: 'nope', target: { group: 'north' } },
        404,
        'unknown-stack',
      ],
      [
        'two target kinds',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { group: 'north', sites: ['n1'] } },
        400,
        'invalid-request',
      ],
      [
        'bad selector',
        'POST',
        '/v1/deployments',
        { stack: 'web', target: { selector: 'region=no rth' } },
        400,
        'bad-selector',
      ],
      ['bad uplink key', 'POST', '/v1/sites', { id: 'x1', uplinkKey: 'AAAA'.repeat(12) }, 400, 'bad-key'],
      [
        'site id grammar',
        'POST',
        '/v1/sites',
        { id: 'Bad Site', uplinkKey: key('x') },
        400,
        'invalid-request',
        /body\.id/,
      ],
      ['duplicate enrolment', 'POST', '/v1/sites', { id: 'n1', uplinkKey: key('n1') }, 409, 'site-exists'],
      ['unknown site', 'GET', '/v1/sites/ghost', undefined, 404, 'unknown-site'],
      [
        'cancel unknown command',
        'POST',
        '/v1/sites/n1/commands/99/cancel',
        undefined,
        404,
        'unknown-command',
      ],
      ['malformed JSON', 'POST', '/v1/groups', '{"name": ', 400, 'malformed-json'],
      ['no route', 'DELETE', '/v1/nothing', undefined, 404, 'not-found'],
    ];
    it.each(cases)('%s', async (_name, method, url, body, status, code, detail) => {
      const f = await makeController();
      await enrolFleet(f);
      await f.call('POST', '/v1/groups', { name: 'empty' });
      await f.call('POST', '/v1/stacks/web/revisions', { compose: webCompose(1) });
      const before = domainDigest(f);
      const audits = auditCount(f);
      const r = await f.call(method, url, body);
      expect(r.status, r.text).toBe(status);
      expect(r.contentType).toContain('application/problem+json');
      expect(r.json).toMatchObject({ status, code, type: `urn:outpost:problem:${code}` });
      expect(typeof r.json.title).toBe('string');
      if (detail) expect(`${r.json.detail} ${JSON.stringify(r.json.errors ?? [])}`).toMatch(detail);
      expect(domainDigest(f)).toBe(before);
      // A failed mutation is audited as failed; a failed read writes nothing.
      const added = f.controller.store.audit.list(audits, 10);
      if (method === 'GET' || url === '/v1/nothing') expect(added).toEqual([]);
      else expect(added.map((e) => e.outcome)).toEqual([`failed:${code}`]);
    });

    it('lists every offending Compose key with its path', async () => {
      const f = await makeController();
      const r = await f.call('POST', '/v1/stacks/web/revisions', {
        compose: `services:\n  web:\n    image: r/a@sha256:${'a'.repeat(64)}\n    ports: ["80", "1:2", 3]\n    cap_add: [X]\n    environment: [A, "B=\${X}"]\n`,
      });
      expect(r.json.errors.map((e: { path: string }) => e.path)).toEqual([
        'services.web.ports[0]',
        'services.web.ports[2]',
        'services.web.cap_add',
        'services.web.environment[0]',
        'services.web.environment[1]',
      ]);
      expect(f.controller.store.stacks.list()).toEqual([]);
    });

    it('a body over the limit is 413 too-large', async () => {
      const f = await makeController({ config: { api: { bodyLimit: 64 * 1024 } } });
      const before = domainDigest(f);
      const r = await f.call('POST', '/v1/stacks/web/revisions', {
        compose: `# ${'x'.repeat(70 * 1024)}\n${webCompose(1)}`,
      });
      expect(r.status).toBe(413);
      expect(r.json).toMatchObject({ code: 'too-large', status: 413 });
      expect(domainDigest(f)).toBe(before);
    });

    it('tag images need allowTags and a policy that permits them', async () => {
      const f = await makeController();
      const compose = 'services:\n  web:\n    image: registry.local/web:1.2\n';
      expect((await f.call('POST', '/v1/stacks/web/revisions', { compose })).json.code).toBe(
        'invalid-compose',
      );
      expect((await f.call('POST', '/v1/stacks/web/revisions', { compose, allowTags: true })).json.code).toBe(
        'forbidden',
      );
      const g = await makeController({ config: { policy: { allowTags: true } } });
      const ok = await g.call('POST', '/v1/stacks/web/revisions', { compose, allowTags: true });
      expect(ok.status, ok.text).toBe(201);
      expect(ok.json.revision.allowTags).toBe(true);
    });
  });

  it('requires a bearer token; /v1/health and /docs are public; OpenAPI documents the API', async () => {
    const f = await makeController();
    const anon = await f.call('GET', '/v1/sites', undefined, { token: null });
    expect(anon.status).toBe(401);
    expect(anon.json.code).toBe('unauthorized');
    expect((await f.call('GET', '/v1/sites', undefined, { token: 'wrong' })).status).toBe(401);
    expect((await f.call('GET', '/v1/health', undefined, { token: null })).json).toEqual({ ok: true });
    const doc = await f.call('GET', '/docs/json', undefined, { token: null });
    expect(doc.status).toBe(200);
    expect(doc.json.openapi).toMatch(/^3\./);
    for (const p of [
      '/v1/sites',
      '/v1/stacks/{name}/revisions',
      '/v1/deployments',
      '/v1/sites/{site}/commands',
      '/v1/audit/verify',
      '/v1/keys',
    ]) {
      expect(Object.keys(doc.json.paths)).toContain(p);
    }
    expect(doc.json.paths['/v1/deployments'].post.requestBody).toBeDefined();
    expect(doc.json.components.schemas.Problem.required).toEqual([
      'type',
      'title',
      'status',
      'detail',
      'code',
    ]);
    expect(doc.json.components.securitySchemes.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    const ui = await f.call('GET', '/docs', undefined, { token: null });
    expect([200, 302]).toContain(ui.status);
  });

  it('reports the signing keys and the trust root in certsDir', async () => {
    const f = await makeController({ approver: true });
    const r = await f.call('GET', '/v1/keys');
    expect(r.json.signing).toEqual({
      kid: f.signer.kid,
      publicKey: Buffer.from(f.signer.publicKey).toString('base64'),
    });
    expect(r.json.approver.kid).toBe('appr-test-1');
    expect(r.json.trustRoot).toBeNull();

    const root = createSigner('root-1', seedOf('root-1'));
    const doc = encodeTrustRoot(
      {
        v: 1,
        ver: 3,
        iat: 1_767_225_600,
        roots: [{ kid: root.kid, pub: root.publicKey }],
        thr: 1,
        keys: [{ kid: f.signer.kid, pub: f.signer.publicKey, types: ['stack.apply', 'heartbeat'] }],
        crit: 1,
      },
      [root],
    );
    const file = certsLayout(f.dataDir).trustRoot;
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, doc);
    const k = (await f.call('GET', '/v1/keys')).json;
    expect(k.trustRoot).toMatchObject({ version: 3, threshold: 1, critical: 1, signingKeyListed: true });
    expect(k.trustRoot.keys[0]).toMatchObject({ kid: f.signer.kid, types: ['stack.apply', 'heartbeat'] });
  });
});

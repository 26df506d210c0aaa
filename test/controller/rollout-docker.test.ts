/**
 * DESIGN §6 with a real agent in the fleet: a staged rollout across five scripted sites (real protocol,
 * scripted outcomes) and one real `outpost agent` on the private Docker engine as the canary. The new
 * revision's image fails its HEALTHCHECK for real; the agent's health gate restores the previous
 * containers and acks `rolled-back`; the controller aborts on the failure threshold and rolls the
 * touched site back through the outbox. No scripted site ever receives the new revision, and the
 * canary's engine runs the old revision again.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LABELS } from '../../agent/src/runtime/types.js';
import { certsLayout } from '../../certs/src/layout.js';
import { COMMAND_TYPES, createSigner, encodeTrustRoot, privateKeyToPem } from '../../protocol/src/index.js';
import {
  docker,
  dockerSocketPath,
  removeContainers,
  requireDocker,
  type Spawned,
  spawnNode,
  TEST_IMAGES,
  tmpDir,
  waitFor,
} from '../helpers/index.js';
import { controllerSigner, seedOf } from './helpers/keys.js';
import { type RolloutWorld, rolloutWorld, type ScriptedSite } from './helpers/rollout-world.js';

// biome-ignore lint/suspicious/noExplicitAny: test convenience over JSON bodies
type Json = any;

const CANARY = `a${Math.random().toString(36).slice(2, 7)}`; // sorts before the p-sites: the canary
const SCRIPTED = ['p01', 'p02', 'p03', 'p04', 'p05'];

/** A compose file the real agent can run on the private engine (images by tag, no ports: no bridge). */
const compose = (image: string): string => `services:
  web:
    image: ${image}
    restart: unless-stopped
`;

/** The certs folder a real agent reads: the test trust root (trusting the controller's test key) and its uplink key. */
function agentCerts(site: string): string {
  const dir = tmpDir('agent-certs');
  const layout = certsLayout(dir);
  const root = createSigner('root-test-1', seedOf('root'));
  const signer = controllerSigner();
  const bytes = encodeTrustRoot(
    {
      v: 1,
      ver: 1,
      iat: 1_700_000_000,
      roots: [{ kid: root.kid, pub: root.publicKey }],
      thr: 1,
      keys: [{ kid: signer.kid, pub: signer.publicKey, types: [...COMMAND_TYPES] }],
      crit: 1,
    },
    [root],
  );
  mkdirSync(dirname(layout.trustRoot), { recursive: true });
  writeFileSync(layout.trustRoot, bytes);
  mkdirSync(dirname(layout.siteUplinkKey(site)), { recursive: true });
  writeFileSync(layout.siteUplinkKey(site), privateKeyToPem(seedOf(`site:${site}`)), { mode: 0o600 });
  return dir;
}

function realAgent(site: string, brokerUrl: string): Spawned {
  const dir = tmpDir('agent');
  return spawnNode(
    'test/agent/helpers/outpost.ts',
    [
      'agent',
      '--site',
      site,
      '--broker',
      brokerUrl,
      '--certs',
      agentCerts(site),
      '--data',
      join(dir, 'data'),
    ],
    {
      OUTPOST_AGENT_DOCKER_SOCKET: dockerSocketPath(),
      OUTPOST_AGENT_ALLOW_TAGS: 'true',
      OUTPOST_AGENT_SETTLE_MS: '100',
      OUTPOST_AGENT_STATE_MIN_INTERVAL_MS: '100',
      OUTPOST_AGENT_HEALTH_RUNNING_FOR_MS: '1000',
      OUTPOST_AGENT_HEALTH_DEADLINE_MS: '10000',
      OUTPOST_AGENT_RECONNECT_MIN_MS: '100',
      OUTPOST_AGENT_RECONNECT_MAX_MS: '500',
      OUTPOST_AGENT_LOG_LEVEL: 'info',
    },
  );
}

/** The canary's containers of stack `web` on the engine: rev label, image and state. */
async function engineView(site: string): Promise<{ rev: string; image: string; state: string }[]> {
  const list = await docker().listContainers({
    all: true,
    filters: { label: [`${LABELS.site}=${site}`, `${LABELS.stack}=web`] },
  });
  return list.map((c) => ({ rev: c.Labels[LABELS.rev] ?? '?', image: c.Image, state: c.State }));
}

const runs = (w: RolloutWorld, site: string, rev: number): boolean => {
  const st = w.f.controller.store.sites.get(site)?.state?.stacks.find((x) => x.name === 'web');
  return st?.rev === rev && st.h === 'healthy';
};

describe('a rollout with a real agent on Docker as the canary', () => {
  beforeEach(() => {
    requireDocker();
  });
  afterEach(async () => {
    await removeContainers(docker(), { [LABELS.site]: CANARY });
  });

  it('the canary fails its health gate for real: the rollout aborts, no other site gets the revision, the canary runs the old one', {
    timeout: 180_000,
  }, async () => {
    const w = await rolloutWorld({ config: { policy: { allowTags: true } } });
    await w.f.enrol(CANARY, ['plant']);
    realAgent(CANARY, w.broker.url);
    const scripted: ScriptedSite[] = [];
    for (const id of SCRIPTED) {
      await w.f.enrol(id, ['plant']);
      scripted.push(await w.site(id));
    }
    await waitFor(
      () => [CANARY, ...SCRIPTED].every((id) => w.f.controller.store.sites.row(id)?.online === 1),
      {
        timeoutMs: 30_000,
        message: 'every site online (the real agent included)',
      },
    );

    const push = async (image: string): Promise<number> => {
      const r = await w.call('POST', '/v1/stacks/web/revisions', {
        compose: compose(image),
        allowTags: true,
      });
      expect([200, 201], r.text).toContain(r.status);
      return r.json.revision.rev as number;
    };
    const good = await push(TEST_IMAGES.web1);
    const d = await w.call('POST', '/v1/deployments', {
      stack: 'web',
      rev: good,
      target: { group: 'plant' },
    });
    expect(d.status, d.text).toBe(201);
    await waitFor(() => [CANARY, ...SCRIPTED].every((id) => runs(w, id, good)), {
      timeoutMs: 60_000,
      message: `every site runs web@${good} healthy`,
    });
    expect(await engineView(CANARY)).toEqual([
      { rev: String(good), image: TEST_IMAGES.web1, state: 'running' },
    ]);

    const bad = await push(TEST_IMAGES.broken);
    const r = await w.call('POST', '/v1/rollouts', {
      id: 'web-broken',
      stack: 'web',
      rev: bad,
      target: { group: 'plant' },
      strategy: { canary: { count: 1 }, batches: { size: 2 } },
      healthSec: 2,
      deadlineSec: 90,
    });
    expect(r.status, r.text).toBe(201);
    expect(r.json.phases.map((p: Json) => p.size)).toEqual([1, 2, 2, 1]);

    const v: Json = await waitFor(
      async () => {
        const x = (await w.call('GET', '/v1/rollouts/web-broken')).json;
        return x.state === 'rolled-back' ? x : undefined;
      },
      { timeoutMs: 90_000, message: 'rollout rolled back' },
    );
    expect(v.reason).toMatch(/failure threshold/);
    expect(v.sites[0]).toMatchObject({ site: CANARY, outcome: 'failed', prevRev: good });
    for (const s of v.sites.slice(1)) expect(s).toMatchObject({ status: 'pending', seq: null });

    // The real agent tried the broken image (its health gate failed on Docker's HEALTHCHECK), restored
    // the previous containers, and then applied the controller's rollback command: the old revision runs.
    await waitFor(() => runs(w, CANARY, good), {
      timeoutMs: 60_000,
      message: 'canary reports the old revision healthy',
    });
    expect(await engineView(CANARY)).toEqual([
      { rev: String(good), image: TEST_IMAGES.web1, state: 'running' },
    ]);
    const cmds = (await w.call('GET', `/v1/sites/${CANARY}/commands?limit=100`)).json.commands as Json[];
    const applies = cmds.filter((c) => c.type === 'stack.apply').sort((a, b) => a.seq - b.seq);
    expect(applies.map((c) => [c.rev, c.status])).toEqual([
      [good, 'applied'],
      [bad, 'rolled-back'],
      [good, 'applied'],
    ]);
    // No site outside the canary ever received the broken revision.
    for (const s of scripted) expect(s.revsReceived('web'), s.site).toEqual([good]);
  });
});

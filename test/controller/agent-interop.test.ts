/**
 * The controller against the real agent (agent/src, MemoryRuntime) through a real broker: the wire
 * contract both sides implement must agree — envelopes and trust root, prev links across collapsed
 * revisions ([ORD-2]), heartbeats that take their own seq ([OUT-7]), signed acks and state.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../agent/src/agent.js';
import { parseConfig } from '../../agent/src/config.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { certsLayout } from '../../certs/src/layout.js';
import { COMMAND_TYPES, createSigner, encodeTrustRoot, privateKeyToPem } from '../../protocol/src/index.js';
import { onCurrentTestFinished, tmpDir, waitFor } from '../helpers/index.js';
import { startBroker } from './helpers/broker.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, makeController } from './helpers/fixture.js';
import { controllerSigner, seedOf } from './helpers/keys.js';

const SITE = 'plant-7';

/** A provisioned site folder: the trust root listing the controller's key, and the site's uplink key. */
function provision(): { certsDir: string; dataDir: string } {
  const dir = tmpDir('interop');
  const certsDir = join(dir, 'certs');
  const layout = certsLayout(certsDir);
  const root = createSigner('root-1', seedOf('interop-root'));
  const ctl = controllerSigner();
  const doc = encodeTrustRoot(
    {
      v: 1,
      ver: 1,
      iat: Math.floor(Date.now() / 1000) - 60,
      roots: [{ kid: root.kid, pub: root.publicKey }],
      thr: 1,
      keys: [{ kid: ctl.kid, pub: ctl.publicKey, types: [...COMMAND_TYPES] }],
      crit: 1,
    },
    [root],
  );
  mkdirSync(dirname(layout.trustRoot), { recursive: true });
  writeFileSync(layout.trustRoot, doc);
  mkdirSync(layout.siteDir(SITE), { recursive: true });
  writeFileSync(layout.siteUplinkKey(SITE), privateKeyToPem(seedOf(`site:${SITE}`)), { mode: 0o600 });
  return { certsDir, dataDir: join(dir, 'data') };
}

async function runAgent(brokerUrl: string, site: { certsDir: string; dataDir: string }): Promise<Agent> {
  const agent = createAgent({
    config: parseConfig({
      site: SITE,
      broker: brokerUrl,
      certsDir: site.certsDir,
      dataDir: site.dataDir,
      settleMs: 100,
      stateMinIntervalMs: 50,
      reconnectMinMs: 50,
      reconnectMaxMs: 200,
      connectTimeoutMs: 2000,
      diskMinFreeBytes: 0,
    }),
    runtime: new MemoryRuntime({ reconcileIntervalMs: 200 }),
    log: pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' }),
  });
  await agent.start();
  return agent;
}

const siteView = async (f: Fixture) => (await f.call('GET', `/v1/sites/${SITE}`)).json;
const cmds = async (f: Fixture) =>
  (await f.call('GET', `/v1/sites/${SITE}/commands?limit=1000`)).json.commands as {
    seq: number;
    type: string;
    rev: number | null;
    status: string;
    prev: number | null;
  }[];

describe('controller with the real agent', () => {
  it('deploys, collapses revisions published while the agent is away, and heartbeats', {
    timeout: 60_000,
  }, async () => {
    const broker = await startBroker();
    const f = await makeController({
      brokerUrl: broker.url,
      config: { outbox: { window: 2, heartbeatSec: 1 } },
    });
    const site = provision();
    let agent = await runAgent(broker.url, site);
    onCurrentTestFinished(async () => {
      await f.close();
      await agent.close();
      await broker.close();
    });
    await f.enrol(SITE, ['plant']);
    await waitFor(async () => (await siteView(f)).online === true, { message: 'agent online' });

    await f.push('web', webCompose(1));
    expect(
      (await f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'plant' } })).status,
    ).toBe(201);
    await waitFor(
      async () =>
        (await siteView(f)).state?.stacks?.find(
          (s: { name: string; rev: number }) => s.name === 'web' && s.rev === 1,
        ),
      { timeoutMs: 20_000, message: 'web rev 1 running at the site' },
    );
    expect((await cmds(f)).find((c) => c.type === 'stack.apply')?.status).toBe('applied');

    // Away: revisions 2..7 are published; W=2 reach the broker, the rest collapse into the newest.
    await agent.close();
    await waitFor(async () => (await siteView(f)).online === false, { message: 'agent offline' });
    for (let n = 2; n <= 7; n++) {
      await f.push('web', webCompose(n));
      expect(
        (await f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: [SITE] } })).status,
      ).toBe(201);
    }
    agent = await runAgent(broker.url, site);
    await waitFor(
      async () =>
        (await siteView(f)).state?.stacks?.find(
          (s: { name: string; rev: number }) => s.name === 'web' && s.rev === 7,
        ),
      { timeoutMs: 20_000, message: 'web rev 7 running at the site' },
    );
    const applies = (await cmds(f)).filter((c) => c.type === 'stack.apply');
    expect(applies.filter((c) => c.status === 'superseded').length).toBeGreaterThanOrEqual(3);
    expect(applies.find((c) => c.rev === 7)?.status).toBe('applied');

    // Heartbeats take their own seq and are acknowledged; the agent sees no gap anywhere.
    await waitFor(async () => (await cmds(f)).some((c) => c.type === 'heartbeat' && c.status === 'applied'), {
      timeoutMs: 15_000,
      message: 'a heartbeat acknowledged',
    });
    const v = await siteView(f);
    expect(v.state.alarms.map((a: { code: string }) => a.code)).not.toContain('seq-gap');
    expect(v.state.last).toBeGreaterThanOrEqual(applies.find((c) => c.rev === 7)!.seq);
    expect(v.status).toMatchObject({ v: 1, site: SITE, online: true });
  });
});

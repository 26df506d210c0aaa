/**
 * The controller's view of an idle site under SPEC [HB-1]/[HB-2], with the real agent (agent/src,
 * SQLite journal, MemoryRuntime) through a real broker: each heartbeat is acknowledged and recorded as
 * contact ([OUT-9]: not stale), while the site sends no state and no status for it; heartbeats that
 * stop raise `stale-control-plane`, which the controller sees in the signed state and the retained
 * status (I10), and a heartbeat clears it. Agent and controller ship the same heartbeat interval.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { type Agent, createAgent } from '../../agent/src/agent.js';
import { HEARTBEAT_INTERVAL_SEC, parseConfig } from '../../agent/src/config.js';
import { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import { certsLayout } from '../../certs/src/layout.js';
import { loadConfig } from '../../controller/src/config.js';
import { COMMAND_TYPES, createSigner, encodeTrustRoot, privateKeyToPem } from '../../protocol/src/index.js';
import { onCurrentTestFinished, tmpDir, waitFor } from '../helpers/index.js';
import { startBroker } from './helpers/broker.js';
import { type Fixture, makeController } from './helpers/fixture.js';
import { controllerSigner, seedOf, siteSigner } from './helpers/keys.js';

const SITE = 'idle-1';

/** A provisioned site folder: the trust root listing the controller's key, and the site's uplink key. */
function provision(): { certsDir: string; dataDir: string } {
  const dir = tmpDir('hb-idle');
  const certsDir = join(dir, 'certs');
  const layout = certsLayout(certsDir);
  const root = createSigner('root-1', seedOf('hb-idle-root'));
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

async function runAgent(
  brokerUrl: string,
  site: { certsDir: string; dataDir: string },
  over: Record<string, unknown>,
): Promise<Agent> {
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
      ...over,
    }),
    runtime: new MemoryRuntime({ reconcileIntervalMs: 200 }),
    log: pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' }),
  });
  await agent.start();
  return agent;
}

const siteView = async (f: Fixture) => (await f.call('GET', `/v1/sites/${SITE}`)).json;
const heartbeats = async (f: Fixture) =>
  (
    (await f.call('GET', `/v1/sites/${SITE}/commands?limit=1000`)).json.commands as {
      seq: number;
      type: string;
      status: string;
    }[]
  ).filter((c) => c.type === 'heartbeat');
const alarmCodes = (xs: { code: string }[] | undefined) => (xs ?? []).map((a) => a.code);

describe('[HB-1] defaults', () => {
  it('agent and controller ship the same heartbeat interval; keepalive stays 300 s', () => {
    const agent = parseConfig({ site: SITE });
    const controller = loadConfig({ env: {} });
    expect(agent.heartbeatIntervalSec).toBe(HEARTBEAT_INTERVAL_SEC);
    expect(controller.outbox.heartbeatSec).toBe(agent.heartbeatIntervalSec);
    expect(agent.keepaliveSec).toBe(300);
    expect(agent.heartbeatMissed).toBe(3);
  });
});

describe('[HB-2] an idle site with the real agent', () => {
  it('acks each heartbeat (contact recorded, not stale) without state or status; silence raises stale-control-plane, a heartbeat clears it', {
    timeout: 60_000,
  }, async () => {
    const broker = await startBroker();
    // The controller's clock: real time, or held still to stop its heartbeats.
    let held: number | undefined;
    const f = await makeController({
      brokerUrl: broker.url,
      config: { outbox: { heartbeatSec: 1 } },
      now: () => held ?? Date.now(),
    });
    await f.enrol(SITE, [], {});
    const site = provision();
    const agent = await runAgent(broker.url, site, { heartbeatIntervalSec: 1, heartbeatMissed: 5 });
    onCurrentTestFinished(async () => {
      await agent.close();
      await f.close();
      await broker.close();
    });
    const ingest = () => f.controller.ingest.stats();
    // Connected: the status (online) and the full snapshot of connect have been recorded.
    await waitFor(async () => (await siteView(f)).online === true && (await siteView(f)).state !== null, {
      message: 'agent online with its snapshot',
    });
    await waitFor(async () => (await heartbeats(f)).some((c) => c.status === 'applied'), {
      message: 'a first heartbeat applied',
    });
    const states0 = ingest().states;
    const statuses0 = ingest().statuses;
    const first = await siteView(f);

    // Three more heartbeats, each acked by the agent.
    const acks0 = ingest().acks;
    await waitFor(() => ingest().acks >= acks0 + 3, { timeoutMs: 20_000, message: 'three heartbeat acks' });
    f.controller.ingest.flush();
    const v = await siteView(f);
    expect(ingest().states).toBe(states0);
    expect(ingest().statuses).toBe(statuses0);
    expect(Date.parse(v.lastContact)).toBeGreaterThan(Date.parse(first.lastContact));
    expect(v).toMatchObject({ online: true, stale: false });
    // State and status are still those of before: unchanged, and their ages keep growing.
    expect(v.state).toEqual(first.state);
    expect(v.status.ts).toBe(first.status.ts);
    const hb = (await heartbeats(f)).filter((c) => c.status === 'applied');
    expect(hb.length).toBeGreaterThan(0);
    expect(agent.status().applied).toBeGreaterThanOrEqual(Math.max(...hb.map((c) => c.seq)));
    expect(alarmCodes(v.state.alarms)).toEqual([]);

    // The controller stops sending heartbeats: after K intervals the site raises the alarm, and the
    // controller sees it in the signed state and in the retained status.
    held = Date.now();
    await waitFor(() => alarmCodes(agent.status().alarms).includes('stale-control-plane'), {
      timeoutMs: 20_000,
      message: 'stale-control-plane at the site',
    });
    await waitFor(
      async () => {
        const s = await siteView(f);
        return (
          alarmCodes(s.state?.alarms).includes('stale-control-plane') &&
          alarmCodes(s.status?.alarms).includes('stale-control-plane')
        );
      },
      { message: 'stale-control-plane in the controller view' },
    );

    // Heartbeats resume: the alarm clears everywhere.
    held = undefined;
    await waitFor(
      async () => {
        const s = await siteView(f);
        return (
          !alarmCodes(agent.status().alarms).includes('stale-control-plane') &&
          !alarmCodes(s.state?.alarms).includes('stale-control-plane') &&
          s.status?.online === true &&
          !alarmCodes(s.status?.alarms).includes('stale-control-plane')
        );
      },
      { timeoutMs: 20_000, message: 'stale-control-plane cleared' },
    );
  });

  it('a status published before the site was enrolled becomes its status at enrolment', {
    timeout: 60_000,
  }, async () => {
    const broker = await startBroker();
    const f = await makeController({ brokerUrl: broker.url });
    const site = provision();
    const agent = await runAgent(broker.url, site, {});
    onCurrentTestFinished(async () => {
      await agent.close();
      await f.close();
      await broker.close();
    });
    // The agent is connected and its status reached the controller, which did not know the site.
    await waitFor(() => agent.status().connected, { message: 'agent connected' });
    await waitFor(() => (f.controller.ingest.stats().ignored['unknown-site'] ?? 0) >= 1, {
      message: 'status of the unknown site',
    });
    // Heartbeats are off here: nothing else would make the idle site publish its status again.
    const key = Buffer.from(siteSigner(SITE).publicKey).toString('base64');
    expect((await f.call('POST', '/v1/sites', { id: SITE, uplinkKey: key })).status).toBe(201);
    const v = await waitFor(
      async () => {
        const s = await siteView(f);
        return s.online === true ? s : undefined;
      },
      { message: 'online after enrolment' },
    );
    expect(v.status).toMatchObject({ v: 1, site: SITE, online: true });
  });
});

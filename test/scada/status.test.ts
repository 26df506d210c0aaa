/**
 * SCADA's view, end to end with real parts: `outpost broker` (TLS 1.3, client certificates, ACL,
 * durable SQLite), the controller (buildController, REST API), a real agent in a child process
 * (createAgent on a MemoryRuntime whose health the test steers), certificates from `outpost certs`,
 * and Mosquitto's `mosquitto_sub` / `mosquitto_pub` as the SCADA client with the read-only identity
 * (`outpost certs scada`: certificate, or username/password).
 *
 * SCADA sees the site go online, deploy (revision in the status), degrade (health unhealthy), roll
 * back (alarm), and go offline by the agent's last will; a reconnecting subscriber gets the retained
 * state; the controller's liveness is retained; the Sparkplug B view of the same events (edge node
 * on the broker) decodes with the independent decoder. The SCADA identity can publish nothing and
 * read nothing but status, rollout, controller status and Sparkplug topics (DESIGN §5, [PAY-STATUS],
 * I10).
 */
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBroker } from '../../broker/src/broker.js';
import { certsLayout, initCerts, issueScadaCert, issueSiteCert } from '../../certs/src/index.js';
import { buildController, type Controller } from '../../controller/src/app.js';
import { loadConfig } from '../../controller/src/config.js';
import { ControllerStatusSchema } from '../../controller/src/scada/schemas.js';
import { createControllerSparkplug, type Sparkplug } from '../../controller/src/sparkplug/index.js';
import { check, publicKeyFromPem, SiteStatusSchema } from '../../protocol/src/index.js';
import { killAll, type Spawned, sleep, spawnNode, tmpDir, waitFor } from '../helpers/index.js';
import type { AgentChildSpec, ControlOp } from './helpers/agent-child.js';
import { SparkplugHost } from './helpers/decoder.js';
import {
  mosquittoPub,
  mosquittoSub,
  mosquittoSubRun,
  type ScadaIdentity,
  type Sub,
} from './helpers/mosquitto-clients.js';

const P = 'outpost/v1';
const SITE = 'site-a';
const STATUS = `${P}/site/${SITE}/status`;
const CONTROLLER = `${P}/controller/status`;
const TOKEN = 'scada-test-admin-token-0123456789';
const PASSWORD = 'scada-password-for-tests';
const log = pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' });

interface SiteStatusJson {
  v: number;
  site: string;
  online: boolean;
  ts: string;
  agent?: string;
  reason?: string;
  stacks?: Record<string, { desired: number; running: number; health: string }>;
  alarms?: { code: string; since: string; msg?: string; stack?: string }[];
  controlAge?: number;
  lastSeq?: number;
}

const compose = (n: number) => `services:
  web:
    image: registry.local/acme/web@sha256:${n.toString(16).padStart(2, '0').repeat(32)}
    environment:
      REV: "${n}"
    restart: unless-stopped
`;

interface World {
  dir: string;
  certs: string;
  port: number;
  broker: ReturnType<typeof createBroker>;
  controller: Controller;
  sparkplug: Sparkplug;
  agent?: Spawned;
  controlFile: string;
  controls: number;
  scadaCert: ScadaIdentity;
  scadaPassword: ScadaIdentity;
  admin: ScadaIdentity;
}

let w: World;

async function api(
  method: string,
  url: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await w.controller.app.inject({
    method: method as 'GET',
    url,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { payload: JSON.stringify(body) } : {}),
  });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as Record<string, unknown>) : {} };
}

async function deploy(rev: number): Promise<void> {
  const push = await api('POST', '/v1/stacks/web/revisions', { compose: compose(rev) });
  expect([200, 201], JSON.stringify(push.json)).toContain(push.status);
  const dep = await api('POST', '/v1/deployments', { stack: 'web', target: { sites: [SITE] } });
  expect(dep.status, JSON.stringify(dep.json)).toBe(201);
}

async function control(op: ControlOp): Promise<void> {
  appendFileSync(w.controlFile, `${JSON.stringify(op)}\n`);
  w.controls++;
  await w.agent!.waitForOutput(new RegExp(`control ${w.controls} ok`), { timeoutMs: 5000 });
}

function startAgent(): Spawned {
  const spec: AgentChildSpec = {
    controlFile: w.controlFile,
    config: {
      site: SITE,
      broker: `mqtts://127.0.0.1:${w.port}`,
      certsDir: w.certs,
      dataDir: join(w.dir, 'agent'),
      settleMs: 100,
      stateMinIntervalMs: 50,
      reconnectMinMs: 50,
      reconnectMaxMs: 500,
      keepaliveSec: 30,
      connectTimeoutMs: 3000,
      diskMinFreeBytes: 0,
      heartbeatIntervalSec: 3600,
    },
  };
  writeFileSync(join(w.dir, 'agent.json'), JSON.stringify(spec));
  return spawnNode('test/scada/helpers/agent-child.ts', [join(w.dir, 'agent.json')], {}, { name: 'agent' });
}

/** The Sparkplug messages a subscriber saw, through the independent decoder's host model. */
function sparkplugView(sub: Sub): SparkplugHost {
  const host = new SparkplugHost();
  for (const m of sub.messages())
    if (m.topic.startsWith('spBv1.0/')) host.handle(m.topic, new Uint8Array(m.bytes));
  return host;
}

const SCADA_TOPICS = [`${P}/site/+/status`, `${P}/rollout/+/status`, CONTROLLER, 'spBv1.0/#'];

beforeAll(async () => {
  const dir = tmpDir('scada');
  const certs = join(dir, 'certs');
  const init = await initCerts(certs);
  await issueSiteCert(certs, SITE);
  await issueScadaCert(certs, 'hmi');
  await issueScadaCert(certs, 'historian', {
    password: PASSWORD,
    noCert: true,
    scrypt: { N: 1024, r: 8, p: 1 },
  });
  const l = certsLayout(certs);
  const broker = createBroker({
    log,
    config: {
      certsDir: certs,
      dataDir: join(dir, 'broker'),
      tls: { host: '127.0.0.1', port: 0, enabled: true, watchCrlMs: 0 },
      metrics: { host: '127.0.0.1', port: 0 },
    },
  });
  const ports = await broker.start();
  const port = ports.tlsPort!;
  const config = loadConfig({
    overrides: {
      dataDir: join(dir, 'controller'),
      certsDir: certs,
      adminToken: TOKEN,
      logLevel: 'silent',
      api: { port: 0 },
      mqtt: { url: `mqtts://127.0.0.1:${port}` },
      signing: { kid: init.controllerKid },
      approver: { kid: init.approverKid },
      outbox: { tickMs: 50, retryMs: 400, maxRetryMs: 2000, heartbeatSec: 0 },
    },
  });
  const controller = await buildController({ config, log });
  await controller.start({ listen: false });
  // Sparkplug runs under the controller's own certificate: the broker's ACL lets the controller role
  // publish edge-node births/data/deaths, read NCMD/STATE and leave an NDEATH will (docs/SCADA.md).
  const sparkplug = createControllerSparkplug({
    config: {
      dataDir: join(dir, 'controller'),
      certsDir: certs,
      mqtt: { url: `mqtts://127.0.0.1:${port}` },
      sparkplug: {
        enabled: true,
        cert: l.controllerCert,
        key: l.controllerKey,
        clientIdBase: 'controller',
        pollMs: 100,
      },
    },
    store: controller.store,
    log,
  });
  w = {
    dir,
    certs,
    port,
    broker,
    controller,
    sparkplug,
    controlFile: join(dir, 'control.jsonl'),
    controls: 0,
    scadaCert: { ca: l.caCert, cert: l.scadaCert('hmi'), key: l.scadaKey('hmi'), clientId: 'hmi' },
    scadaPassword: { ca: l.caCert, username: 'scada:historian', password: PASSWORD, clientId: 'historian' },
    admin: { ca: l.caCert, cert: l.adminCert, key: l.adminKey, clientId: 'admin.watch' },
  };
  writeFileSync(w.controlFile, '');
  for (const g of ['plant']) expect((await api('POST', '/v1/groups', { name: g })).status).toBe(201);
  const uplink = publicKeyFromPem(readFileSync(l.siteUplinkPub(SITE), 'utf8'));
  const enrol = await api('POST', '/v1/sites', {
    id: SITE,
    uplinkKey: Buffer.from(uplink).toString('base64'),
    groups: ['plant'],
  });
  expect(enrol.status, JSON.stringify(enrol.json)).toBe(201);
}, 120_000);

afterAll(async () => {
  await w?.agent?.kill('SIGTERM');
  await w?.sparkplug.close();
  await w?.controller.close();
  await w?.broker.close();
  await killAll();
});

describe('SCADA status topics over TLS with mosquitto_sub (read-only identity)', () => {
  it('sees a site go online, deploy, degrade, roll back and go offline (last will); a reconnecting subscriber gets the retained state; Sparkplug agrees', async () => {
    const sub = mosquittoSub(w.port, w.scadaCert, SCADA_TOPICS);
    // The controller's retained liveness is there from the start.
    const ctl = await sub.waitJson<{ online: boolean }>(CONTROLLER, (j) => j.online === true);
    expect(ctl).toMatchObject({ v: 1, online: true });
    w.sparkplug.start();

    // Online.
    w.agent = startAgent();
    const online = await sub.waitJson<SiteStatusJson>(STATUS, (s) => s.online && s.agent !== undefined);
    expect(online).toMatchObject({ v: 1, site: SITE, online: true });
    expect(Date.now() - Date.parse(online.ts)).toBeLessThan(60_000); // age = now - ts

    // Deploy: the revision appears.
    await deploy(1);
    const deployed = await sub.waitJson<SiteStatusJson>(
      STATUS,
      (s) => s.stacks?.['web']?.running === 1 && s.stacks['web'].health === 'healthy',
    );
    expect(deployed.stacks?.['web']).toEqual({ desired: 1, running: 1, health: 'healthy' });
    expect(deployed.lastSeq).toBeGreaterThanOrEqual(1);
    await waitFor(() => sparkplugView(sub).value('plant', SITE, 'stacks/web/running_rev') === 1, {
      message: 'Sparkplug running_rev 1',
      timeoutMs: 15_000,
    });

    // Degrade: the service turns unhealthy (and is restarted by the reconciler).
    await control({ op: 'unhealthy', stack: 'web', svc: 'web', value: true });
    await control({ op: 'crash', stack: 'web', svc: 'web' });
    await sub.waitJson<SiteStatusJson>(STATUS, (s) => s.stacks?.['web']?.health === 'unhealthy');
    await waitFor(() => sparkplugView(sub).value('plant', SITE, 'stacks/web/health') === 'unhealthy', {
      message: 'Sparkplug health unhealthy',
      timeoutMs: 15_000,
    });
    await control({ op: 'unhealthy', stack: 'web', svc: 'web', value: false });
    await control({ op: 'crash', stack: 'web', svc: 'web' });
    await sub.waitJson<SiteStatusJson>(
      STATUS,
      (s) => s.stacks?.['web']?.health === 'healthy' && !s.alarms?.length,
    );

    // Roll back: revision 2 fails its health gate; the site keeps revision 1 and raises an alarm.
    await control({ op: 'healthFailure', stack: 'web', rev: 2 });
    await deploy(2);
    const rolledBack = await sub.waitJson<SiteStatusJson>(STATUS, (s) =>
      Boolean(s.alarms?.some((a) => a.code === 'rolled-back' && a.stack === 'web')),
    );
    expect(rolledBack.stacks?.['web']?.running).toBe(1);
    expect(rolledBack.alarms?.find((a) => a.code === 'rolled-back')?.msg).toMatch(/rev 2/);
    await waitFor(() => sparkplugView(sub).value('plant', SITE, 'alarms/rolled-back') === true, {
      message: 'Sparkplug rolled-back alarm',
      timeoutMs: 15_000,
    });
    await sleep(500); // let any later status of this burst arrive
    const lastLive = sub.json<SiteStatusJson>(STATUS).at(-1)!;

    // A subscriber that reconnects gets the retained state: the latest status, flagged retained.
    await sub.stop();
    const again = mosquittoSub(w.port, w.scadaCert, [`${P}/site/+/status`, CONTROLLER]);
    const retained = await again.waitJson<SiteStatusJson>(STATUS, () => true);
    expect(again.on(STATUS)[0]?.retained).toBe(true);
    // The same state as the last live message (or a newer status of the same state, if the agent
    // wrote one meanwhile).
    const { ts: _t1, controlAge: _c1, ...retainedState } = retained;
    const { ts: _t2, controlAge: _c2, ...liveState } = lastLive;
    expect(retainedState).toEqual(liveState);
    expect(Date.parse(retained.ts)).toBeGreaterThanOrEqual(Date.parse(lastLive.ts));
    expect(retained.alarms?.some((a) => a.code === 'rolled-back')).toBe(true);
    await again.waitJson<{ online: boolean }>(CONTROLLER, (j) => j.online);
    await again.stop();

    // Offline: the agent dies; the broker publishes its last will.
    const watch = mosquittoSub(w.port, w.scadaCert, SCADA_TOPICS);
    await watch.waitJson<SiteStatusJson>(STATUS, () => true);
    await w.agent.kill('SIGKILL');
    const offline = await watch.waitJson<SiteStatusJson>(STATUS, (s) => !s.online);
    expect(offline).toMatchObject({ v: 1, site: SITE, online: false, reason: 'connection-lost' });
    expect(watch.on(STATUS).at(-1)?.retained).toBe(false); // delivered live
    // The controller saw it too (API), and Sparkplug declares the device dead.
    await waitFor(async () => (await api('GET', `/v1/sites/${SITE}`)).json['online'] === false, {
      message: 'controller marks the site offline',
    });
    await waitFor(() => watch.messages().some((m) => m.topic === `spBv1.0/outpost/DDEATH/plant/${SITE}`), {
      message: 'Sparkplug DDEATH',
      timeoutMs: 15_000,
    });
    await watch.stop();

    // Reconnect once more: the retained status is the will's offline status.
    const last = await mosquittoSubRun(w.port, w.scadaPassword, [`${P}/site/+/status`, CONTROLLER], [], 2);
    const retainedStatus = last.messages.find((m) => m.topic === STATUS)!;
    expect(retainedStatus.retained).toBe(true);
    expect(JSON.parse(retainedStatus.text)).toEqual(offline);
    const retainedCtl = last.messages.find((m) => m.topic === CONTROLLER)!;
    expect(retainedCtl.retained).toBe(true);
    expect(JSON.parse(retainedCtl.text)).toMatchObject({ v: 1, online: true });

    // Every status SCADA saw is a valid SiteStatus ([PAY-STATUS]).
    for (const s of sub.json(STATUS)) check(SiteStatusSchema, s, 'site status');
    for (const c of [
      ...sub.json(CONTROLLER),
      ...last.messages.filter((m) => m.topic === CONTROLLER).map((m) => JSON.parse(m.text)),
    ]) {
      check(ControllerStatusSchema, c, 'controller status');
    }
  }, 120_000);

  it('the SCADA identity (certificate, and username/password) reads status, rollout, controller and Sparkplug topics, and nothing else; it can publish nothing', async () => {
    if (!w.agent || w.agent.exitInfo) w.agent = startAgent();
    await waitFor(async () => (await api('GET', `/v1/sites/${SITE}`)).json['online'] === true, {
      message: 'site online again',
      timeoutMs: 20_000,
    });
    const rejects = async (reason: string) =>
      (await w.broker.metrics.value('outpost_broker_rejects_total', { reason })) ?? 0;
    // The admin sees everything: it catches anything that leaks or gets published.
    const watch = mosquittoSub(w.port, w.admin, ['#']);
    await watch.waitJson(CONTROLLER, () => true);
    const before = { pub: await rejects('acl-publish'), sub: await rejects('acl-subscribe') };
    const ALLOWED = [`${P}/site/+/status`, STATUS, `${P}/rollout/+/status`, CONTROLLER, 'spBv1.0/#'];
    const DENIED = [
      `${P}/site/${SITE}/cmd`,
      `${P}/site/+/cmd`,
      `${P}/site/${SITE}/ack`,
      `${P}/site/+/state`,
      `${P}/#`,
      '#',
      '$SYS/#',
      `${P}/site/${SITE}/+`,
    ];
    const ATTEMPTS = [
      [STATUS, ['-r']],
      [`${P}/site/${SITE}/cmd`, []],
      [CONTROLLER, ['-r']],
      [`${P}/rollout/r1/status`, ['-r']],
      ['spBv1.0/outpost/NCMD/plant', []],
      ['spBv1.0/STATE/hmi', ['-r']],
      ['elsewhere/topic', []],
    ] as const;

    for (const id of [w.scadaCert, w.scadaPassword]) {
      // One subscription with allowed and refused filters: SUBACK grants exactly the allowed ones.
      const sub = mosquittoSub(
        w.port,
        { ...id, clientId: `${id.clientId}.acl` },
        [...ALLOWED, ...DENIED],
        ['-d'],
      );
      const granted = await waitFor(() => /Subscribed \(mid: \d+\): ([\d, ]+)/.exec(sub.proc.stdout())?.[1], {
        message: `${id.clientId} SUBACK`,
      });
      expect(granted.split(', ').map(Number)).toEqual([...ALLOWED.map(() => 1), ...DENIED.map(() => 128)]);
      await sub.waitJson<SiteStatusJson>(STATUS, (s) => s.online); // retained status arrives

      // A real command flow while it listens: cmd to the agent, ack and state back.
      await deploy(3 + (id === w.scadaCert ? 0 : 1));
      await waitFor(() => watch.on(`${P}/site/${SITE}/ack`).length > 0, {
        message: 'acks flowed (admin view)',
      });
      await sub.waitJson<SiteStatusJson>(STATUS, (s) => (s.stacks?.['web']?.running ?? 0) >= 3);

      // Publishing anything is refused (the broker closes the connection); so is a last will.
      for (const [topic, flags] of ATTEMPTS) {
        const r = await mosquittoPub(
          w.port,
          { ...id, clientId: `${id.clientId}.pub` },
          topic,
          'scada-was-here',
          flags,
        );
        expect(r.code, `${id.clientId} publish ${topic}: ${r.output}`).not.toBe(0);
      }
      const will = await mosquittoSubRun(
        w.port,
        { ...id, clientId: `${id.clientId}.will` },
        [STATUS],
        ['--will-topic', STATUS, '--will-payload', 'scada-was-here'],
      );
      expect(will.code).not.toBe(0);
      expect(will.output).toMatch(/not authori[sz]ed/i);

      await sleep(300);
      await sub.stop();
      const seen = sub.messages().map((m) => m.topic);
      expect(seen.length).toBeGreaterThan(0);
      for (const t of seen)
        expect(t, 'only allowed topics reach SCADA').toMatch(
          /^(outpost\/v1\/site\/[^/]+\/status|outpost\/v1\/rollout\/[^/]+\/status|outpost\/v1\/controller\/status|spBv1\.0\/.*)$/,
        );
      expect(seen.some((t) => t.endsWith('/cmd') || t.endsWith('/ack') || t.endsWith('/state'))).toBe(false);
    }
    // Nothing the SCADA clients sent reached anyone; the retained status is still the agent's.
    expect(watch.messages().filter((m) => m.text === 'scada-was-here')).toEqual([]);
    const retained = await mosquittoSubRun(w.port, w.scadaCert, [STATUS], [], 2);
    expect(JSON.parse(retained.messages[0]!.text)).toMatchObject({ site: SITE, online: true });
    expect(watch.on(`${P}/site/${SITE}/cmd`).length).toBeGreaterThan(0);
    await watch.stop();
    // The broker counted the refusals: 7 publishes and 8 filters per identity.
    expect((await rejects('acl-publish')) - before.pub).toBe(2 * ATTEMPTS.length);
    expect((await rejects('acl-subscribe')) - before.sub).toBe(2 * DENIED.length);
    // A wrong password is refused at CONNECT.
    const bad = await mosquittoSubRun(
      w.port,
      { ...w.scadaPassword, password: 'not-the-password' },
      [STATUS],
      [],
      2,
    );
    expect(bad.output).toMatch(/bad user name or password|not authori[sz]ed/i);
  }, 120_000);
});

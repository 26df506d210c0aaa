/**
 * Sparkplug B edge nodes (controller/src/sparkplug) against Mosquitto, an independent broker, with
 * every payload decoded by the INDEPENDENT decoder (protobufjs 7 + the .proto written from the
 * Sparkplug 3.0 specification) and checked by a minimal host application (helpers/decoder.ts):
 * births, data by alias, device deaths, seq 0..255 wrapping across all messages of a node, rebirth
 * on NCMD, primary host STATE, and bdSeq/alias persistence across restarts and crashes (the NDEATH
 * will's bdSeq equals the session's NBIRTH bdSeq).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import {
  createSparkplug,
  deviceMetrics,
  type SiteView,
  type Sparkplug,
  type SparkplugConfig,
} from '../../controller/src/sparkplug/index.js';
import { mosquitto, onCurrentTestFinished, spawnNode, tmpDir, waitFor } from '../helpers/index.js';
import { encodeNcmd, type SparkplugHost } from './helpers/decoder.js';
import { observe } from './helpers/observer.js';
import type { SparkplugChildSpec } from './helpers/sparkplug-child.js';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const log = pino({ level: process.env['OUTPOST_TEST_LOG'] ?? 'silent' });

function site(id: string, o: Partial<SiteView> = {}): SiteView {
  return {
    id,
    groups: ['north'],
    online: true,
    lastContactMs: T0,
    statusMs: T0,
    agentVersion: '0.1.0',
    controlAgeSec: 3,
    lastSeq: 1,
    stacks: [{ name: 'web', desired: 1, running: 1, health: 'healthy' }],
    alarms: [],
    ...o,
  };
}

interface Rig {
  sites: SiteView[];
  clock: number;
  sp: Sparkplug;
  stateFile: string;
}

function startSparkplug(
  url: string,
  config: Partial<SparkplugConfig>,
  sites: SiteView[],
  stateFile?: string,
): Rig {
  const rig: Rig = {
    sites,
    clock: T0 + 5000,
    stateFile: stateFile ?? join(tmpDir('sp'), 'sparkplug.json'),
    sp: undefined as unknown as Sparkplug,
  };
  rig.sp = createSparkplug({
    config: { pollMs: 50, rebirthMinIntervalMs: 0, ...config },
    source: { sites: () => rig.sites },
    connection: { url },
    stateFile: rig.stateFile,
    log,
    now: () => rig.clock,
  });
  rig.sp.start();
  onCurrentTestFinished(() => rig.sp.close());
  return rig;
}

/** Every metric the host knows for the device equals what the controller's view says. */
function expectDeviceMatches(host: SparkplugHost, node: string, v: SiteView, nowMs: number): void {
  const dev = host.node(node)?.devices.get(v.id);
  expect(dev, `device ${node}/${v.id}`).toBeDefined();
  const want = Object.fromEntries(deviceMetrics(v, nowMs).map((m) => [m.name, m.value]));
  const got = Object.fromEntries([...dev!.metrics.values()].map((m) => [m.name, m.value]));
  expect(got).toEqual(want);
}

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('Sparkplug B edge nodes (Mosquitto, independent decoder)', () => {
  it('births: NBIRTH seq 0 with bdSeq and Node Control/Rebirth; DBIRTH per site per group node; offline sites DBIRTH + DDEATH', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    const rig = startSparkplug(broker.url, {}, [
      site('a1'),
      site('a2', {
        groups: ['north', 'south'],
        stacks: [{ name: 'db', desired: 4, running: 3, health: 'starting' }],
      }),
      site('b1', { groups: [], online: false, alarms: [{ code: 'stale-control-plane' }] }),
    ]);
    await waitFor(() => obs.of('DBIRTH').length >= 4 && obs.of('DDEATH').length >= 1, {
      message: 'births of three nodes',
    });
    const h = obs.host;
    expect(h.violations).toEqual([]);
    for (const node of ['north', 'south', 'ungrouped']) {
      const [nb] = obs.of('NBIRTH', node);
      expect(nb?.topic).toBe(`spBv1.0/outpost/NBIRTH/${node}`);
      expect(nb?.payload.seq).toBe(0);
      const byName = Object.fromEntries(nb!.payload.metrics.map((m) => [m.name, m]));
      expect(byName['bdSeq']).toMatchObject({ datatype: 'Int64', value: 0, field: 'longValue' });
      expect(byName['Node Control/Rebirth']).toMatchObject({ datatype: 'Boolean', value: false });
      expect(byName['Outpost/primary_host_online']).toMatchObject({ datatype: 'Boolean', value: false });
    }
    expect(h.node('north')!.metrics.get('Outpost/sites')?.value).toBe(2);
    expect(h.node('north')!.metrics.get('Outpost/sites_online')?.value).toBe(2);
    expect([...h.node('north')!.devices.keys()]).toEqual(['a1', 'a2']);
    expect([...h.node('south')!.devices.keys()]).toEqual(['a2']);
    expect([...h.node('ungrouped')!.devices.keys()]).toEqual(['b1']);

    // Datatypes on the wire, decoded independently.
    const a1 = h.node('north')!.devices.get('a1')!;
    expect(a1.alive).toBe(true);
    const types = Object.fromEntries([...a1.metrics.values()].map((m) => [m.name, m.datatype]));
    expect(types).toMatchObject({
      online: 'Boolean',
      agent_version: 'String',
      last_contact: 'DateTime',
      last_contact_age_s: 'Int64',
      status_time: 'DateTime',
      control_age_s: 'Int64',
      last_seq: 'Int64',
      'alarms/count': 'UInt32',
      'alarms/rolled-back': 'Boolean',
      'stacks/web/desired_rev': 'UInt32',
      'stacks/web/running_rev': 'UInt32',
      'stacks/web/health': 'String',
    });
    expect(h.value('north', 'a1', 'last_contact')).toBe(T0);
    expect(h.value('north', 'a1', 'last_contact_age_s')).toBe(5);
    expect(h.value('south', 'a2', 'stacks/db/running_rev')).toBe(3);
    expect(h.value('south', 'a2', 'stacks/db/health')).toBe('starting');
    for (const v of rig.sites)
      for (const node of v.groups.length ? v.groups : ['ungrouped']) {
        expectDeviceMatches(h, node, v, rig.clock);
      }
    // An offline site: its metrics and last values are known, and it is dead.
    const b1 = h.node('ungrouped')!.devices.get('b1')!;
    expect(b1.alive).toBe(false);
    expect(b1.metrics.get('online')?.value).toBe(false);
    expect(b1.metrics.get('alarms/stale-control-plane')?.value).toBe(true);
    expect(b1.metrics.get('alarms/count')?.value).toBe(1);
    // The DBIRTH came right before the DDEATH, in the node's seq order.
    const ung = obs.seen.filter((m) => m.node === 'ungrouped').map((m) => [m.type, m.payload.seq]);
    expect(ung).toEqual([
      ['NBIRTH', 0],
      ['DBIRTH', 1],
      ['DDEATH', 2],
    ]);
  });

  it('changes: DDATA by alias only, DBIRTH when the metric set changes, DDATA + DDEATH when a site goes offline; seq continues across all messages and wraps 255 -> 0', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    const rig = startSparkplug(broker.url, { pollMs: 600_000 }, [site('a1')]);
    const h = obs.host;
    await waitFor(() => h.node('north')?.devices.get('a1'), { message: 'DBIRTH a1' });

    // Degrade: health unhealthy and a rolled-back alarm.
    rig.sites = [
      site('a1', {
        stacks: [{ name: 'web', desired: 2, running: 1, health: 'unhealthy' }],
        alarms: [{ code: 'rolled-back', stack: 'web' }],
      }),
    ];
    rig.sp.notify();
    await waitFor(() => h.value('north', 'a1', 'stacks/web/health') === 'unhealthy', {
      message: 'DDATA health',
    });
    const [dd] = obs.of('DDATA');
    expect(dd?.topic).toBe('spBv1.0/outpost/DDATA/north/a1');
    expect(dd?.payload.metrics.every((m) => m.name === undefined && m.alias !== undefined)).toBe(true);
    expect(h.value('north', 'a1', 'stacks/web/desired_rev')).toBe(2);
    expect(h.value('north', 'a1', 'alarms/rolled-back')).toBe(true);
    expect(h.value('north', 'a1', 'alarms/count')).toBe(1);
    // Unchanged metrics are not repeated.
    expect(dd?.payload.metrics.length).toBe(4);

    // A stack is added: the device is born again with the new metric set.
    rig.sites = [
      site('a1', {
        stacks: [...rig.sites[0]!.stacks, { name: 'db', desired: 1, running: 1, health: 'healthy' }],
      }),
    ];
    rig.sp.notify();
    await waitFor(() => h.value('north', 'a1', 'stacks/db/running_rev') === 1, { message: 'DBIRTH with db' });
    expect(h.node('north')!.devices.get('a1')!.births).toBe(2);

    // Offline: the last values, then DDEATH.
    rig.clock += 1000;
    rig.sites = [site('a1', { online: false, stacks: rig.sites[0]!.stacks })];
    rig.sp.notify();
    await waitFor(() => h.node('north')!.devices.get('a1')!.alive === false, { message: 'DDEATH' });
    expect(h.value('north', 'a1', 'online')).toBe(false);
    expect(h.node('north')!.metrics.get('Outpost/sites_online')?.value).toBe(0);
    // Back online: DBIRTH.
    rig.sites = [site('a1', { stacks: rig.sites[0]!.stacks })];
    rig.sp.notify();
    await waitFor(() => h.node('north')!.devices.get('a1')!.alive, { message: 'DBIRTH after offline' });
    expect(h.node('north')!.devices.get('a1')!.births).toBe(3);

    // 300 changes: one DDATA each; seq runs through 255 and wraps to 0.
    const base = obs.seen.length;
    for (let i = 0; i < 300; i++) {
      rig.sites = [{ ...rig.sites[0]!, lastSeq: 100 + i }];
      rig.sp.notify();
      await tick();
      await tick();
    }
    await waitFor(() => h.value('north', 'a1', 'last_seq') === 399, {
      message: 'last DDATA',
      timeoutMs: 15_000,
    });
    const seqs = obs.seen.filter((m) => m.node === 'north').map((m) => m.payload.seq!);
    expect(obs.seen.length - base).toBeGreaterThanOrEqual(300);
    const wrap = seqs.findIndex((s, i) => s === 255 && seqs[i + 1] === 0);
    expect(wrap).toBeGreaterThan(0);
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBe((seqs[i - 1]! + 1) % 256);
    expect(h.violations).toEqual([]);
    expectDeviceMatches(h, 'north', rig.sites[0]!, rig.clock);
  });

  it('rebirth: NCMD Node Control/Rebirth (by name, then by alias) republishes NBIRTH with seq 0 and the same bdSeq, then every DBIRTH', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    startSparkplug(broker.url, {}, [site('a1'), site('a2')]);
    const h = obs.host;
    await waitFor(() => h.node('north')?.devices.size === 2, { message: 'births' });
    const bd = h.node('north')!.bdSeq;
    await obs.client.publishAsync(
      'spBv1.0/outpost/NCMD/north',
      Buffer.from(encodeNcmd([{ name: 'Node Control/Rebirth', boolean: true }], Date.now())),
      { qos: 0 },
    );
    await waitFor(() => h.node('north')!.births === 2 && h.node('north')!.devices.size === 2, {
      message: 'rebirth by name',
    });
    const alias = h.node('north')!.metrics.get('Node Control/Rebirth')!.alias;
    await obs.client.publishAsync(
      'spBv1.0/outpost/NCMD/north',
      Buffer.from(encodeNcmd([{ alias, boolean: true }], Date.now())),
      { qos: 0 },
    );
    await waitFor(() => h.node('north')!.births === 3 && h.node('north')!.devices.size === 2, {
      message: 'rebirth by alias',
    });
    // false is not a request; garbage is ignored.
    await obs.client.publishAsync(
      'spBv1.0/outpost/NCMD/north',
      Buffer.from(encodeNcmd([{ name: 'Node Control/Rebirth', boolean: false }], Date.now())),
    );
    await obs.client.publishAsync('spBv1.0/outpost/NCMD/north', Buffer.from('not protobuf \xff\xff'));
    await new Promise((r) => setTimeout(r, 300));
    expect(h.node('north')!.births).toBe(3);
    const nbirths = obs.of('NBIRTH', 'north');
    expect(nbirths.map((m) => m.payload.seq)).toEqual([0, 0, 0]);
    expect(nbirths.map((m) => m.payload.metrics.find((x) => x.name === 'bdSeq')?.value)).toEqual([
      bd,
      bd,
      bd,
    ]);
    expect(h.violations).toEqual([]);
  });

  it('primary host STATE: births wait briefly for it, a host coming online gets a rebirth, stale STATE is ignored, an offline host is noted and publishing continues', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    const host = 'scada-host';
    const stateTopic = `spBv1.0/STATE/${host}`;
    const ts = Date.now();
    await obs.client.publishAsync(stateTopic, JSON.stringify({ online: false, timestamp: ts }), {
      qos: 1,
      retain: true,
    });
    const rig = startSparkplug(broker.url, { primaryHostId: host, primaryHostWaitMs: 5000 }, [site('a1')]);
    const h = obs.host;
    // The retained offline STATE ends the wait at once: births, noting the host is offline.
    await waitFor(() => h.node('north')?.devices.get('a1'), { message: 'births', timeoutMs: 4000 });
    expect(h.node('north')!.metrics.get('Outpost/primary_host_online')?.value).toBe(false);

    await obs.client.publishAsync(stateTopic, JSON.stringify({ online: true, timestamp: ts + 1 }), {
      qos: 1,
      retain: true,
    });
    await waitFor(() => h.node('north')!.births === 2, { message: 'rebirth when the host comes online' });
    expect(h.node('north')!.metrics.get('Outpost/primary_host_online')?.value).toBe(true);

    // An older STATE is ignored.
    await obs.client.publishAsync(stateTopic, JSON.stringify({ online: false, timestamp: ts - 10 }), {
      qos: 1,
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(h.node('north')!.metrics.get('Outpost/primary_host_online')?.value).toBe(true);

    // The host goes offline: NDATA notes it; data keeps flowing.
    await obs.client.publishAsync(stateTopic, JSON.stringify({ online: false, timestamp: ts + 2 }), {
      qos: 1,
      retain: true,
    });
    await waitFor(() => h.node('north')!.metrics.get('Outpost/primary_host_online')?.value === false, {
      message: 'NDATA primary host offline',
    });
    rig.sites = [site('a1', { lastSeq: 7 })];
    rig.sp.notify();
    await waitFor(() => h.value('north', 'a1', 'last_seq') === 7, {
      message: 'DDATA while the host is offline',
    });
    expect(h.node('north')!.births).toBe(2);
    expect(h.violations).toEqual([]);

    // Without any STATE, the births come after primaryHostWaitMs.
    const lone = await observe(broker.url, 'spBv1.0/other/#');
    const t = Date.now();
    startSparkplug(broker.url, { groupId: 'other', primaryHostId: 'nobody', primaryHostWaitMs: 700 }, [
      site('z1'),
    ]);
    await waitFor(() => lone.host.node('north', 'other')?.devices.get('z1'), {
      message: 'births after the wait',
    });
    expect(Date.now() - t).toBeGreaterThanOrEqual(600);
  });

  it('nodes: site makes one edge node (own connection and NDEATH will) per site; an unreadable state file is set aside', async () => {
    const broker = await mosquitto({ conf: 'allow_anonymous true\nconnection_messages true\nlog_type all' });
    const obs = await observe(broker.url);
    const dir = tmpDir('spsite');
    const stateFile = join(dir, 'sparkplug.json');
    writeFileSync(stateFile, '{ not json');
    const rig = startSparkplug(
      broker.url,
      { nodes: 'site' },
      [site('a1'), site('b2', { groups: [], online: false })],
      stateFile,
    );
    const h = obs.host;
    await waitFor(() => h.node('a1')?.devices.get('a1') && h.node('b2')?.devices.get('b2'), {
      message: 'births per site',
    });
    expect(h.node('a1')!.bdSeq).toBe(0);
    expect(h.node('b2')!.devices.get('b2')!.alive).toBe(false);
    expect(rig.sp.stats().nodes.map((n) => [n.node, n.connected, n.devices])).toEqual([
      ['a1', true, 1],
      ['b2', true, 1],
    ]);
    await waitFor(() => /controller\.sp-a1/.test(broker.logs()) && /controller\.sp-b2/.test(broker.logs()), {
      message: 'one MQTT client per node',
    });
    expect(readdirSync(dir).some((f) => f.startsWith('sparkplug.json.bad-'))).toBe(true);
    expect(JSON.parse(readFileSync(stateFile, 'utf8'))).toMatchObject({ v: 1 });
    // A site that disappears from the source takes its edge node with it (NDEATH).
    rig.sites = [rig.sites[0]!];
    rig.sp.notify();
    await waitFor(() => obs.of('NDEATH', 'b2').length === 1, { message: 'NDEATH of the removed node' });
    expect(h.node('b2')!.deaths).toEqual([0]);
    expect(h.violations).toEqual([]);
  });

  it('bdSeq: the NDEATH will carries the session NBIRTH bdSeq; restarts and reconnects use the next one, wrapping 255 -> 0; aliases stay the same', async () => {
    const broker = await mosquitto();
    const obs = await observe(broker.url);
    const dir = tmpDir('spchild');
    const spec: SparkplugChildSpec = {
      url: broker.url,
      stateFile: join(dir, 'sparkplug.json'),
      sitesFile: join(dir, 'sites.json'),
      config: { pollMs: 100 },
    };
    writeFileSync(spec.sitesFile, JSON.stringify([site('a1'), site('a2', { online: false })]));
    writeFileSync(join(dir, 'spec.json'), JSON.stringify(spec));
    const run = () => spawnNode('test/scada/helpers/sparkplug-child.ts', [join(dir, 'spec.json')]);
    const h = obs.host;
    const aliasMap = () => {
      const n = h.node('north')!;
      return Object.fromEntries([...n.aliases].map(([a, v]) => [`${v.device ?? ''}/${v.name}`, a]));
    };
    const births = () => obs.of('NBIRTH', 'north').length;
    const deaths = () => obs.of('NDEATH', 'north').length;
    const birthed = (k: number) =>
      waitFor(() => births() >= k && h.node('north')!.devices.size === 2, {
        message: `NBIRTH #${k}`,
        timeoutMs: 20_000,
      });

    // Session 1, then SIGKILL: the broker publishes the will.
    let child = run();
    await birthed(1);
    expect(h.node('north')!.bdSeq).toBe(0);
    const aliases1 = aliasMap();
    await child.kill('SIGKILL');
    await waitFor(() => deaths() >= 1, { message: 'NDEATH will after SIGKILL' });
    expect(h.node('north')!.deaths).toEqual([0]);
    expect(h.node('north')!.alive).toBe(false);

    // Session 2 (restart): next bdSeq, same aliases; SIGTERM publishes the NDEATH itself.
    child = run();
    await birthed(2);
    expect(h.node('north')!.bdSeq).toBe(1);
    expect(aliasMap()).toEqual(aliases1);
    await child.kill('SIGTERM');
    expect(child.exitInfo?.code).toBe(0);
    await waitFor(() => deaths() >= 2, { message: 'NDEATH on orderly stop' });
    expect(h.node('north')!.deaths).toEqual([0, 1]);

    // Wrap: the store says 254 was used last.
    const state = JSON.parse(readFileSync(spec.stateFile, 'utf8')) as {
      nodes: Record<string, { bdSeq: number }>;
    };
    state.nodes['outpost/north']!.bdSeq = 254;
    writeFileSync(spec.stateFile, JSON.stringify(state));
    child = run();
    await birthed(3);
    expect(h.node('north')!.bdSeq).toBe(255);
    await child.kill('SIGKILL');
    await waitFor(() => deaths() >= 3, { message: 'NDEATH 255' });
    child = run();
    await birthed(4);
    expect(h.node('north')!.bdSeq).toBe(0);
    expect(aliasMap()).toEqual(aliases1);
    await child.kill('SIGKILL');
    await waitFor(() => deaths() >= 4, { message: 'NDEATH 0' });
    expect(h.node('north')!.deaths).toEqual([0, 1, 255, 0]);
    const birthBdSeqs = obs
      .of('NBIRTH', 'north')
      .map((m) => m.payload.metrics.find((x) => x.name === 'bdSeq')?.value);
    expect(birthBdSeqs).toEqual(h.node('north')!.deaths);
    expect(h.violations).toEqual([]);

    // In one process, a new MQTT session (broker restart) also moves bdSeq on.
    const rig = startSparkplug(broker.url, {}, [site('a1'), site('a2', { online: false })], spec.stateFile);
    await birthed(5);
    expect(h.node('north')!.bdSeq).toBe(1);
    const port = broker.port;
    await broker.stop();
    const again = await mosquitto({ port });
    const obs2 = await observe(again.url);
    await waitFor(() => obs2.host.node('north')?.devices.get('a1'), {
      message: 'births after reconnect',
      timeoutMs: 15_000,
    });
    expect(obs2.host.node('north')!.bdSeq).toBe(2);
    expect(rig.sp.stats().nodes[0]).toMatchObject({ node: 'north', connected: true, bdSeq: 2 });
    expect(obs2.host.violations).toEqual([]);
  }, 90_000);
});

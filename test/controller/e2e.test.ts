/**
 * End to end through a real aedes broker with simulated sites that speak the real protocol
 * (openCommand on their side, signed acks and state back): deployments arrive and are acknowledged,
 * state shows in the API, the per-site window holds (I4), newer revisions collapse while a site is
 * away (I4), unacknowledged commands are resent byte for byte ([MQTT-3]), forged uplink is ignored (I9).
 */
import { describe, expect, it } from 'vitest';
import { createSigner, encodeAck, envelopeRef, siteKid } from '../../protocol/src/index.js';
import { onCurrentTestFinished, sleep, tmpDir, waitFor } from '../helpers/index.js';
import { startBroker, type TestBroker } from './helpers/broker.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, type FixtureOptions, makeController } from './helpers/fixture.js';
import { controllerSigner, seedOf, trustFor } from './helpers/keys.js';
import { SimSite, type SimSiteOptions } from './helpers/sim-site.js';

interface World {
  broker: TestBroker;
  f: Fixture;
  site(id: string, opts?: SimSiteOptions): Promise<SimSite>;
}

async function world(o: FixtureOptions = {}): Promise<World> {
  const broker = await startBroker();
  const sims: SimSite[] = [];
  const f = await makeController({ ...o, brokerUrl: broker.url });
  onCurrentTestFinished(async () => {
    await f.close();
    for (const s of sims) await s.close();
    await broker.close();
  });
  return {
    broker,
    f,
    async site(id, opts) {
      const s = new SimSite(id, broker.url, trustFor(controllerSigner()), opts);
      sims.push(s);
      await s.connect();
      return s;
    },
  };
}

const commands = async (f: Fixture, site: string) =>
  (await f.call('GET', `/v1/sites/${site}/commands?limit=1000`)).json.commands as {
    seq: number;
    status: string;
    rev: number | null;
    type: string;
    attempts: number;
    reason: string | null;
  }[];

const statusCounts = async (f: Fixture, site: string): Promise<Record<string, number>> => {
  const out: Record<string, number> = {};
  for (const c of await commands(f, site)) out[c.status] = (out[c.status] ?? 0) + 1;
  return out;
};

const online = async (f: Fixture, site: string): Promise<boolean | null> =>
  (await f.call('GET', `/v1/sites/${site}`)).json.online;

describe('end to end with a real broker', () => {
  it('deploys to a group; acks arrive; per-site state and acks are visible in the API', async () => {
    const w = await world();
    await w.f.enrol('n1', ['north'], { region: 'north' });
    await w.f.enrol('n2', ['north'], { region: 'north' });
    await w.f.enrol('s1', ['south']);
    const n1 = await w.site('n1');
    const n2 = await w.site('n2');
    const s1 = await w.site('s1');
    await waitFor(async () => (await online(w.f, 'n1')) && (await online(w.f, 'n2')), {
      message: 'sites online',
    });

    await w.f.push('web', webCompose(1));
    const dep = await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'north' } });
    expect(dep.status, dep.text).toBe(201);

    await waitFor(
      async () => (await w.f.call('GET', `/v1/deployments/${dep.json.id}`)).json.counts.applied === 2,
      {
        message: 'both north sites applied',
      },
    );
    for (const sim of [n1, n2]) {
      const [cmd] = sim.commands();
      expect(cmd).toMatchObject({
        site: sim.site,
        seq: 1,
        prev: 0,
        type: 'stack.apply',
        body: { stack: 'web', rev: 1 },
      });
      expect(sim.deliveries[0]!.kid).toBe(w.f.signer.kid);
      expect(sim.rejected).toEqual([]);
    }
    expect(s1.deliveries).toEqual([]);

    const view = await waitFor(
      async () => {
        const v = (await w.f.call('GET', '/v1/sites/n1')).json;
        return v.state?.stacks?.length ? v : undefined;
      },
      { message: 'n1 state' },
    );
    expect(view).toMatchObject({
      online: true,
      state: { last: 1, stacks: [{ name: 'web', rev: 1, h: 'healthy' }] },
    });
    expect(view.age).toBeGreaterThanOrEqual(0);
    expect(view.stateAge).toBeLessThan(30);
    const acks = (await w.f.call('GET', '/v1/sites/n1/acks')).json.acks;
    expect(acks.map((a: { st: string; seq: number; matched: boolean }) => [a.st, a.seq, a.matched])).toEqual([
      ['applied', 1, true],
      ['accepted', 1, true],
    ]);
    const cmd = (await w.f.call('GET', '/v1/sites/n1/commands/1')).json;
    expect(cmd).toMatchObject({ status: 'applied', prev: 0, attempts: 1 });
    expect(cmd.ref).toBe(
      Buffer.from(envelopeRef(Buffer.from(n1.deliveries[0]!.bytes, 'hex'))).toString('hex'),
    );
  });

  it('holds at most W unacknowledged commands per site at the broker; 20 revisions to an offline site cost W+1 on reconnect (I4)', async () => {
    const W = 4;
    const w = await world({ config: { outbox: { window: W } } });
    await w.f.enrol('s1', ['g']);
    const first = await w.site('s1');
    await waitFor(() => online(w.f, 's1'), { message: 's1 online' });
    await first.goOffline();
    await waitFor(async () => (await online(w.f, 's1')) === false, { message: 's1 offline' });

    for (let n = 1; n <= 20; n++) {
      await w.f.push('web', webCompose(n));
      const r = await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['s1'] } });
      expect(r.status).toBe(201);
    }
    await waitFor(async () => (await statusCounts(w.f, 's1')).published === W, { message: `${W} published` });
    // While the site is offline nothing more is published and nothing is resent (retryMs is 400 ms here).
    await sleep(1500);
    const list = await commands(w.f, 's1');
    expect(await statusCounts(w.f, 's1')).toEqual({ published: W, pending: 1, superseded: 20 - W - 1 });
    expect(list.filter((c) => c.status === 'published').every((c) => c.attempts === 1)).toBe(true);
    expect(list.find((c) => c.status === 'pending')?.rev).toBe(20);

    const back = await w.site('s1');
    await waitFor(async () => (await statusCounts(w.f, 's1')).applied === W + 1, {
      message: 'all delivered commands applied',
    });
    await sleep(300);
    const got = back.commands();
    expect(got.length).toBeLessThanOrEqual(W + 1);
    expect(got.map((c) => (c.body as { rev: number }).rev)).toEqual([1, 2, 3, 4, 20]);
    // prev links each delivered command to the previously published one: collapsing left no gap.
    expect(got.map((c) => [c.seq, c.prev])).toEqual([
      [1, 0],
      [2, 1],
      [3, 2],
      [4, 3],
      [20, 4],
    ]);
    expect(back.rejected).toEqual([]);
  });

  it('resends an unacknowledged command with the same bytes until the signed ack ([MQTT-3])', async () => {
    const w = await world();
    await w.f.enrol('r1');
    const sim = await w.site('r1', { autoAck: false });
    await waitFor(() => online(w.f, 'r1'), { message: 'r1 online' });
    await w.f.push('web', webCompose(1));
    await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['r1'] } });
    await waitFor(() => sim.deliveries.length >= 3, { message: 'three deliveries of the unacked command' });
    expect(new Set(sim.deliveries.map((d) => d.bytes)).size).toBe(1);
    expect(sim.bySeq.size).toBe(1);
    await sim.ackCommand(sim.commands()[0]!, 'accepted');
    await waitFor(async () => (await commands(w.f, 'r1'))[0]?.status === 'accepted', { message: 'accepted' });
    const n = sim.deliveries.length;
    await sleep(1500);
    expect(sim.deliveries.length).toBe(n);
    await sim.ackCommand(sim.commands()[0]!, 'applied');
    await waitFor(async () => (await commands(w.f, 'r1'))[0]?.status === 'applied', { message: 'applied' });
  });

  it('polls an accepted command until its final ack, recovering a lost one ([OUT-5], [ORD-4])', async () => {
    const w = await world({ config: { outbox: { pollMs: 300 } } });
    await w.f.enrol('p1');
    const sim = await w.site('p1', { autoAck: false });
    await waitFor(() => online(w.f, 'p1'), { message: 'p1 online' });
    await w.f.push('web', webCompose(1));
    await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['p1'] } });
    await sim.waitSeqs(1);
    const cmd = sim.commands()[0]!;
    await sim.ackCommand(cmd, 'accepted');
    // The site applies it, but its `applied` ack is lost: the controller still sees `accepted`.
    await waitFor(async () => (await commands(w.f, 'p1'))[0]?.status === 'accepted', { message: 'accepted' });
    await waitFor(() => sim.deliveries.length >= 2, { message: 'the accepted command is polled' });
    expect(new Set(sim.deliveries.map((d) => d.bytes)).size).toBe(1);
    // The duplicate is re-acked with its recorded status.
    await sim.ackCommand(cmd, 'applied');
    await waitFor(async () => (await commands(w.f, 'p1'))[0]?.status === 'applied', { message: 'applied' });
    const n = sim.deliveries.length;
    await sleep(1000);
    expect(sim.deliveries.length).toBe(n);
  });

  it('after a restart, polls accepted commands at once: a final ack lost with the last process is recovered ([OUT-5], [OUT-8])', async () => {
    const broker = await startBroker();
    const dataDir = tmpDir('ctl-restart');
    const sims: SimSite[] = [];
    let f = await makeController({
      brokerUrl: broker.url,
      dataDir,
      config: { outbox: { pollMs: 3_600_000 } },
    });
    onCurrentTestFinished(async () => {
      await f.close();
      for (const s of sims) await s.close();
      await broker.close();
    });
    await f.enrol('q1');
    const sim = new SimSite('q1', broker.url, trustFor(controllerSigner()), { autoAck: false });
    sims.push(sim);
    await sim.connect();
    await waitFor(() => online(f, 'q1'), { message: 'q1 online' });
    await f.push('web', webCompose(1));
    await f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['q1'] } });
    await sim.waitSeqs(1);
    const cmd = sim.commands()[0]!;
    await sim.ackCommand(cmd, 'accepted');
    await waitFor(async () => (await commands(f, 'q1'))[0]?.status === 'accepted', { message: 'accepted' });
    const before = sim.deliveries.length;
    // The site's `applied` ack went to a controller that died before committing it: from the
    // controller's database, the command is still `accepted`, its next poll an hour away.
    await f.close();
    f = await makeController({ brokerUrl: broker.url, dataDir, config: { outbox: { pollMs: 3_600_000 } } });
    await waitFor(() => sim.deliveries.length > before, {
      timeoutMs: 20_000,
      message: 'polled after restart',
    });
    expect(new Set(sim.deliveries.map((d) => d.bytes)).size).toBe(1);
    await sim.ackCommand(cmd, 'applied');
    await waitFor(async () => (await commands(f, 'q1'))[0]?.status === 'applied', { message: 'applied' });
  });

  it('ignores and counts forged or misdirected uplink; a rejection with ref maps to its command (I9, [ACK-3])', async () => {
    const w = await world();
    await w.f.enrol('a1');
    await w.f.enrol('b1');
    const a1 = await w.site('a1', { autoAck: false });
    const b1 = await w.site('b1', { autoAck: false });
    await w.f.push('web', webCompose(1));
    await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['a1'] } });
    await a1.waitSeqs(1);
    const cmd = a1.commands()[0]!;

    // Signed with a key that is not a1's enrolled uplink key.
    await a1.sendAck(
      { st: 'applied', seq: cmd.seq, id: cmd.id },
      createSigner(siteKid('a1'), seedOf('impostor')),
    );
    // b1's own valid signature, published on a1's topic ([TOP-3]).
    await a1.publishRaw(
      'ack',
      encodeAck({ v: 1, site: 'b1', useq: 99, at: 1, st: 'applied', seq: 1, id: cmd.id }, b1.signer),
    );
    // Not CBOR at all, and an unknown site's key.
    await a1.publishRaw('ack', 'garbage');
    await a1.sendAck({ st: 'applied', seq: cmd.seq, id: cmd.id }, createSigner(siteKid('zz'), seedOf('zz')));
    await a1.publishRaw('status', '{"v":1');

    await waitFor(
      async () => {
        const ig = (await w.f.call('GET', '/v1/stats')).json.ingest.ignored;
        return (
          (ig['bad-signature'] ?? 0) >= 1 &&
          (ig['wrong-site'] ?? 0) >= 1 &&
          (ig['malformed'] ?? 0) >= 2 &&
          (ig['unknown-key'] ?? 0) >= 1
        );
      },
      { message: 'forgeries counted' },
    );
    expect((await commands(w.f, 'a1'))[0]?.status).toBe('published');
    expect((await w.f.call('GET', '/v1/sites/a1/acks')).json.acks).toEqual([]);

    // A rejection that could not read the envelope carries only its ref.
    await a1.sendAck({
      st: 'rejected',
      rc: 'policy',
      ref: envelopeRef(Buffer.from(a1.deliveries[0]!.bytes, 'hex')),
    });
    await waitFor(async () => (await commands(w.f, 'a1'))[0]?.status === 'rejected', {
      message: 'rejected via ref',
    });
    expect((await commands(w.f, 'a1'))[0]?.reason).toBe('policy');
    const acks = (await w.f.call('GET', '/v1/sites/a1/acks')).json.acks;
    expect(acks).toHaveLength(1);
    expect(acks[0]).toMatchObject({ st: 'rejected', rc: 'policy', seq: 1, matched: true });
  });

  it('marks a site offline from its last will', async () => {
    const w = await world();
    await w.f.enrol('l1');
    const sim = await w.site('l1');
    await waitFor(() => online(w.f, 'l1'), { message: 'online' });
    // Cut the connection without DISCONNECT: the broker publishes the retained will.
    (sim as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
    await waitFor(async () => (await online(w.f, 'l1')) === false, { message: 'offline via last will' });
    const v = (await w.f.call('GET', '/v1/sites/l1')).json;
    expect(v.status).toMatchObject({ online: false, reason: 'connection-lost' });
  });

  it('sends signed heartbeats to idle sites; they never pile up', async () => {
    const w = await world({ config: { outbox: { heartbeatSec: 1 } } });
    await w.f.enrol('h1');
    const sim = await w.site('h1');
    await waitFor(() => sim.commands().filter((c) => c.type === 'heartbeat').length >= 3, {
      timeoutMs: 15_000,
      message: 'three heartbeats',
    });
    const hbs = sim.commands().filter((c) => c.type === 'heartbeat');
    for (const [i, hb] of hbs.entries()) {
      expect(hb.body).toEqual({ last: hb.seq });
      expect(hb.prev).toBe(i === 0 ? 0 : hbs[i - 1]!.seq);
    }
    const rows = (await commands(w.f, 'h1')).filter((c) => c.type === 'heartbeat');
    expect(rows.length).toBeLessThanOrEqual(2);
  });

  it('expires pending commands past their expiry instead of sending them', async () => {
    let clock = Date.now();
    const w = await world({ now: () => clock, config: { outbox: { window: 1 } } });
    await w.f.enrol('e1');
    const sim = await w.site('e1', { autoAck: false });
    await w.f.push('web', webCompose(1));
    await w.f.push('app', webCompose(2));
    await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { sites: ['e1'] }, ttlSec: 60 });
    await w.f.call('POST', '/v1/deployments', { stack: 'app', target: { sites: ['e1'] }, ttlSec: 60 });
    await sim.waitSeqs(1);
    expect((await commands(w.f, 'e1')).map((c) => c.status)).toEqual(['pending', 'published']);
    clock += 61_000;
    await waitFor(async () => (await commands(w.f, 'e1'))[0]?.status === 'expired', {
      message: 'seq 2 expired',
    });
    await sim.ackCommand(sim.commands()[0]!, 'rejected', { rc: 'expired' });
    await waitFor(async () => (await commands(w.f, 'e1'))[1]?.status === 'expired', {
      message: 'seq 1 expired by ack',
    });
    expect(sim.bySeq.has(2)).toBe(false);
  });
});

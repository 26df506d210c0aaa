/**
 * The ACL as a pure function (DESIGN §5, default deny; SPEC [TOP-4] topics via Topics/parseTopic).
 * The Mosquitto-driven suite proves the same rules end to end.
 */
import { describe, expect, it } from 'vitest';
import { Acl } from '../../broker/src/acl.js';
import type { Identity, Role } from '../../broker/src/identity.js';
import { clientIdAllowed, parseUsername } from '../../broker/src/identity.js';

const acl = new Acl('outpost/v1', { maxTopicLength: 256, maxTopicLevels: 16 });
const id = (role: Role, name: string): Identity => ({ role, name, clientId: name, method: 'certificate' });
const agentA = id('agent', 'site-a');
const ctl = id('controller', 'controller');
const scada = id('scada', 'hmi');
const admin = id('admin', 'admin');

describe('agent', () => {
  it('subscribes to exactly its own cmd', () => {
    expect(acl.canSubscribe(agentA, 'outpost/v1/site/site-a/cmd').ok).toBe(true);
    for (const f of [
      'outpost/v1/site/site-b/cmd',
      'outpost/v1/site/+/cmd',
      'outpost/v1/site/site-a/+',
      'outpost/v1/site/site-a/#',
      'outpost/v1/#',
      '#',
      '+/v1/site/site-a/cmd',
      '$SYS/#',
      '$share/g/outpost/v1/site/site-a/cmd',
      'outpost/v1/site/site-a/status',
    ]) {
      expect(acl.canSubscribe(agentA, f), f).toMatchObject({ ok: false, reason: 'acl-subscribe' });
    }
  });

  it('publishes only its own ack, state, status; retain only on status', () => {
    for (const ch of ['ack', 'state', 'status']) {
      expect(acl.canPublish(agentA, `outpost/v1/site/site-a/${ch}`).ok, ch).toBe(true);
    }
    expect(acl.canPublish(agentA, 'outpost/v1/site/site-a/status', true).ok).toBe(true);
    expect(acl.canPublish(agentA, 'outpost/v1/site/site-a/ack', true).ok).toBe(false);
    for (const t of [
      'outpost/v1/site/site-a/cmd',
      'outpost/v1/site/site-b/ack',
      'outpost/v1/controller/status',
      'outpost/v1/rollout/r1/status',
      'elsewhere/x',
      '$SYS/x',
    ]) {
      expect(acl.canPublish(agentA, t).ok, t).toBe(false);
    }
  });

  it('reads only its own cmd (authorizeForward)', () => {
    expect(acl.canRead(agentA, 'outpost/v1/site/site-a/cmd').ok).toBe(true);
    expect(acl.canRead(agentA, 'outpost/v1/site/site-b/cmd').ok).toBe(false);
    expect(acl.canRead(agentA, '$SYS/x/heartbeat').ok).toBe(false);
  });

  it('may only leave a will on its own status', () => {
    expect(acl.willAllowed(agentA, 'outpost/v1/site/site-a/status', true).ok).toBe(true);
    expect(acl.willAllowed(agentA, 'outpost/v1/site/site-b/status', true)).toMatchObject({
      reason: 'will-topic',
    });
    expect(acl.willAllowed(agentA, 'outpost/v1/site/site-a/ack', false)).toMatchObject({
      reason: 'will-topic',
    });
  });
});

describe('controller', () => {
  it('publishes cmd for any site (never retained), rollout and controller status', () => {
    expect(acl.canPublish(ctl, 'outpost/v1/site/site-a/cmd').ok).toBe(true);
    expect(acl.canPublish(ctl, 'outpost/v1/site/any-site/cmd').ok).toBe(true);
    expect(acl.canPublish(ctl, 'outpost/v1/site/site-a/cmd', true).ok).toBe(false);
    expect(acl.canPublish(ctl, 'outpost/v1/rollout/r-7/status', true).ok).toBe(true);
    expect(acl.canPublish(ctl, 'outpost/v1/controller/status', true).ok).toBe(true);
    for (const t of [
      'outpost/v1/site/site-a/ack',
      'outpost/v1/site/site-a/status',
      'spBv1.0/STATE/e',
      'x/y',
    ]) {
      expect(acl.canPublish(ctl, t).ok, t).toBe(false);
    }
  });

  it('subscribes to every site uplink channel but not to cmd or #', () => {
    for (const f of [
      'outpost/v1/site/+/ack',
      'outpost/v1/site/+/state',
      'outpost/v1/site/+/status',
      'outpost/v1/site/site-a/ack',
      'outpost/v1/rollout/+/status',
      'outpost/v1/controller/status',
    ]) {
      expect(acl.canSubscribe(ctl, f).ok, f).toBe(true);
    }
    for (const f of [
      'outpost/v1/site/+/cmd',
      'outpost/v1/site/+/+',
      'outpost/v1/site/#',
      '#',
      'outpost/v1/+/+/ack',
    ]) {
      expect(acl.canSubscribe(ctl, f).ok, f).toBe(false);
    }
  });
});

describe('controller as Sparkplug B edge nodes', () => {
  it('publishes node and device births, data and deaths, never retained, never STATE or commands', () => {
    for (const t of [
      'spBv1.0/outpost/NBIRTH/plant',
      'spBv1.0/outpost/NDATA/plant',
      'spBv1.0/outpost/NDEATH/plant',
      'spBv1.0/outpost/DBIRTH/plant/site-a',
      'spBv1.0/outpost/DDATA/plant/site-a',
      'spBv1.0/outpost/DDEATH/plant/site-a',
    ]) {
      expect(acl.canPublish(ctl, t).ok, t).toBe(true);
      expect(acl.canPublish(ctl, t, true), `${t} retained`).toMatchObject({
        ok: false,
        reason: 'acl-publish',
      });
    }
    for (const t of [
      'spBv1.0/STATE/scada-host',
      'spBv1.0/outpost/NCMD/plant',
      'spBv1.0/outpost/DCMD/plant/site-a',
      'spBv1.0/outpost/NBIRTH/+',
      'spBv1.0/outpost/NBIRTH/plant/extra',
      'spBv1.0/outpost/DDATA/plant',
    ]) {
      expect(acl.canPublish(ctl, t), t).toMatchObject({ ok: false, reason: 'acl-publish' });
    }
  });

  it('reads only NCMD to a node and host STATE; its will may be an NDEATH', () => {
    for (const f of ['spBv1.0/outpost/NCMD/plant', 'spBv1.0/STATE/+', 'spBv1.0/STATE/scada-host']) {
      expect(acl.canSubscribe(ctl, f).ok, f).toBe(true);
    }
    for (const f of [
      'spBv1.0/#',
      'spBv1.0/outpost/NCMD/+',
      'spBv1.0/outpost/DDATA/plant/+',
      'spBv1.0/+/NCMD/plant',
    ]) {
      expect(acl.canSubscribe(ctl, f), f).toMatchObject({ ok: false, reason: 'acl-subscribe' });
    }
    expect(acl.canRead(ctl, 'spBv1.0/outpost/NCMD/plant').ok).toBe(true);
    expect(acl.canRead(ctl, 'spBv1.0/outpost/DDATA/plant/site-a').ok).toBe(false);
    expect(acl.willAllowed(ctl, 'spBv1.0/outpost/NDEATH/plant', false).ok).toBe(true);
    expect(acl.willAllowed(ctl, 'spBv1.0/outpost/NDEATH/plant', true).ok).toBe(false);
    expect(acl.willAllowed(ctl, 'spBv1.0/outpost/NBIRTH/plant', false).ok).toBe(false);
  });
});

describe('scada', () => {
  it('never publishes, not even a will', () => {
    expect(acl.canPublish(scada, 'outpost/v1/site/site-a/status')).toMatchObject({ reason: 'acl-publish' });
    expect(acl.canPublish(scada, 'spBv1.0/g/NCMD/e')).toMatchObject({ reason: 'acl-publish' });
    expect(acl.willAllowed(scada, 'outpost/v1/site/site-a/status', true).ok).toBe(false);
  });

  it('reads status topics and Sparkplug B only', () => {
    for (const f of [
      'outpost/v1/site/+/status',
      'outpost/v1/site/site-a/status',
      'outpost/v1/rollout/+/status',
      'outpost/v1/controller/status',
      'spBv1.0/#',
      'spBv1.0/plant/+/edge-1',
    ]) {
      expect(acl.canSubscribe(scada, f).ok, f).toBe(true);
    }
    for (const f of ['outpost/v1/site/+/ack', 'outpost/v1/site/+/cmd', 'outpost/v1/#', '#', 'spBv1.0']) {
      expect(acl.canSubscribe(scada, f).ok, f).toBe(false);
    }
    expect(acl.canRead(scada, 'spBv1.0/plant/NDATA/edge-1').ok).toBe(true);
    expect(acl.canRead(scada, 'outpost/v1/site/site-a/state').ok).toBe(false);
  });
});

describe('admin and limits', () => {
  it('admin may do anything but publish to $SYS', () => {
    expect(acl.canSubscribe(admin, '#').ok).toBe(true);
    expect(acl.canSubscribe(admin, '$SYS/#').ok).toBe(true);
    expect(acl.canPublish(admin, 'any/topic').ok).toBe(true);
    expect(acl.canPublish(admin, '$SYS/fake').ok).toBe(false);
  });

  it('topic depth and length limits apply to every role', () => {
    const deep = Array.from({ length: 17 }, () => 'a').join('/');
    expect(acl.canSubscribe(admin, deep)).toMatchObject({ ok: false, reason: 'topic-too-deep' });
    expect(acl.canPublish(admin, deep)).toMatchObject({ ok: false, reason: 'topic-too-deep' });
    expect(acl.canPublish(admin, 'x'.repeat(257))).toMatchObject({ ok: false, reason: 'topic-too-long' });
    expect(acl.canPublish(admin, Array.from({ length: 16 }, () => 'a').join('/')).ok).toBe(true);
  });

  it('a different prefix is honoured', () => {
    const other = new Acl('plant9/outpost', { maxTopicLength: 256, maxTopicLevels: 16 });
    expect(other.canSubscribe(agentA, 'plant9/outpost/site/site-a/cmd').ok).toBe(true);
    expect(other.canSubscribe(agentA, 'outpost/v1/site/site-a/cmd').ok).toBe(false);
  });
});

describe('identity rules', () => {
  it('agents use exactly their CN; other roles CN or CN.suffix', () => {
    expect(clientIdAllowed('agent', 'site-a', 'site-a')).toBe(true);
    expect(clientIdAllowed('agent', 'site-a', 'site-a.x')).toBe(false);
    expect(clientIdAllowed('agent', 'site-a', 'site-b')).toBe(false);
    expect(clientIdAllowed('controller', 'controller', 'controller')).toBe(true);
    expect(clientIdAllowed('controller', 'controller', 'controller.ingest')).toBe(true);
    expect(clientIdAllowed('controller', 'controller', 'controller-x')).toBe(false);
    expect(clientIdAllowed('controller', 'controller', 'controller.')).toBe(false);
    expect(clientIdAllowed('scada', 'hmi', 'hmi.a.b')).toBe(false);
    expect(clientIdAllowed('agent', 'Bad Name', 'Bad Name')).toBe(false);
  });

  it('usernames are role:name', () => {
    expect(parseUsername('scada:hmi')).toEqual({ role: 'scada', name: 'hmi' });
    expect(parseUsername('root:hmi')).toBeUndefined();
    expect(parseUsername('hmi')).toBeUndefined();
    expect(parseUsername('scada:HMI')).toBeUndefined();
  });
});

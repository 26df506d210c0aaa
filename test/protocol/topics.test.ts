import { describe, expect, it } from 'vitest';
import {
  assertPrefix,
  assertSiteId,
  DEFAULT_PREFIX,
  isSiteId,
  parseTopic,
  SITE_CHANNELS,
  Topics,
} from '../../protocol/src/index.js';
import { codeOf } from './helpers.js';

describe('site id grammar [TOP-2]', () => {
  const good = ['a', '0', 'plant-01', 'a_b-c', 'x'.repeat(63), `9${'-'.repeat(62)}`, 'z_'];
  const bad = [
    '',
    'x'.repeat(64),
    'Plant',
    '-a',
    '_a',
    'a b',
    'a/b',
    'a+',
    'a#',
    'a.b',
    'é',
    'a\n',
    'a\u0000',
    '+',
    '#',
  ];
  it.each(good)('accepts %j', (id) => {
    expect(isSiteId(id)).toBe(true);
    expect(assertSiteId(id)).toBe(id);
  });
  it.each(bad)('rejects %j with malformed', (id) => {
    expect(isSiteId(id)).toBe(false);
    expect(codeOf(() => assertSiteId(id))).toBe('malformed');
  });
  it('rejects non-strings', () => {
    for (const v of [undefined, null, 1, ['a'], { a: 1 }]) {
      expect(isSiteId(v)).toBe(false);
      expect(codeOf(() => assertSiteId(v))).toBe('malformed');
    }
  });
});

describe('topic prefix [TOP-1]', () => {
  it.each(['outpost/v1', 'a', 'a/b/c/d', 'Acme.Fleet_1/v-2'])('accepts %j', (p) => {
    expect(assertPrefix(p)).toBe(p);
  });
  it.each(['', 'a/', '/a', 'a//b', 'a/b/c/d/e', 'a/+', 'a/#', '$SYS', 'a b', 'x'.repeat(65)])(
    'rejects %j',
    (p) => {
      expect(codeOf(() => assertPrefix(p))).toBe('malformed');
      expect(codeOf(() => new Topics(p))).toBe('malformed');
    },
  );
});

describe('topic builders [TOP-1] [TOP-4]', () => {
  const t = new Topics();
  it('builds every site channel under the default prefix', () => {
    expect(t.prefix).toBe(DEFAULT_PREFIX);
    expect(t.cmd('plant-01')).toBe('outpost/v1/site/plant-01/cmd');
    expect(t.ack('plant-01')).toBe('outpost/v1/site/plant-01/ack');
    expect(t.state('plant-01')).toBe('outpost/v1/site/plant-01/state');
    expect(t.status('plant-01')).toBe('outpost/v1/site/plant-01/status');
    for (const ch of SITE_CHANNELS) expect(t.site('s1', ch)).toBe(`outpost/v1/site/s1/${ch}`);
  });
  it('builds rollout, controller and wildcard subscription topics', () => {
    expect(t.rolloutStatus('r-42')).toBe('outpost/v1/rollout/r-42/status');
    expect(t.controllerStatus()).toBe('outpost/v1/controller/status');
    expect(t.allSites('ack')).toBe('outpost/v1/site/+/ack');
    expect(t.allSiteStatus()).toBe('outpost/v1/site/+/status');
    expect(t.allRolloutStatus()).toBe('outpost/v1/rollout/+/status');
  });
  it('uses a custom prefix', () => {
    expect(new Topics('acme/ot').cmd('s')).toBe('acme/ot/site/s/cmd');
  });
  it('refuses ids that would inject topic levels or wildcards', () => {
    for (const id of ['a/b', '+', '#', 'A', '', 'a/../b']) {
      expect(codeOf(() => t.cmd(id))).toBe('malformed');
      expect(codeOf(() => t.rolloutStatus(id))).toBe('malformed');
    }
  });
});

describe('parseTopic [TOP-4]', () => {
  const t = new Topics();
  it('round-trips every builder', () => {
    for (const ch of SITE_CHANNELS) {
      expect(parseTopic(t.site('plant-01', ch))).toEqual({ kind: 'site', site: 'plant-01', channel: ch });
    }
    expect(parseTopic(t.rolloutStatus('r1'))).toEqual({ kind: 'rollout', rollout: 'r1' });
    expect(parseTopic(t.controllerStatus())).toEqual({ kind: 'controller' });
  });
  it('parses under a custom prefix only', () => {
    expect(parseTopic('acme/ot/site/s/ack', 'acme/ot')).toEqual({ kind: 'site', site: 's', channel: 'ack' });
    expect(parseTopic('acme/ot/site/s/ack')).toBeUndefined();
    expect(parseTopic('outpost/v1/site/s/ack', 'acme/ot')).toBeUndefined();
  });
  it.each([
    'outpost/v1',
    'outpost/v1/',
    'outpost/v2/site/s/cmd',
    'outpost/v1x/site/s/cmd',
    'outpost/v1/site/s',
    'outpost/v1/site/s/cmd/extra',
    'outpost/v1/site/S/cmd',
    'outpost/v1/site/+/cmd',
    'outpost/v1/site/#',
    'outpost/v1/site//cmd',
    'outpost/v1/site/s/commands',
    'outpost/v1/rollout/r1',
    'outpost/v1/rollout/r1/progress',
    'outpost/v1/rollout/R1/status',
    'outpost/v1/controller',
    'outpost/v1/controller/status/x',
    'outpost/v1/sites/s/cmd',
    '/outpost/v1/site/s/cmd',
  ])('returns undefined for %j', (topic) => {
    expect(parseTopic(topic)).toBeUndefined();
  });
});

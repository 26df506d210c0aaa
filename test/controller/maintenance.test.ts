/**
 * Maintenance windows at the controller ([MW-7]): the API stores windows per site and per group
 * (real SQLite, audited), refuses bad ones with problem+json naming the field, and every stack command
 * created for the site afterwards carries the effective `mw` inside its signed envelope (real broker,
 * envelope read back from the outbox and opened with the controller's key).
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { verifyChain } from '../../controller/src/audit.js';
import { run } from '../../controller/src/client/cli.js';
import { parseWindowArg } from '../../controller/src/client/sites.js';
import {
  COMMAND_LIMITS,
  type Command,
  CommandHeaderSchema,
  check,
  decode,
  parseSign1,
  verifySign1,
} from '../../protocol/src/index.js';
import { waitFor } from '../helpers/index.js';
import { startBroker, type TestBroker } from './helpers/broker.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, makeController } from './helpers/fixture.js';
import { ADMIN_TOKEN } from './helpers/keys.js';

let broker: TestBroker;
let f: Fixture;

beforeEach(async () => {
  broker = await startBroker();
  f = await makeController({ brokerUrl: broker.url, config: { outbox: { window: 16 } } });
  expect((await f.call('POST', '/v1/groups', { name: 'north' })).status).toBe(201);
  await f.enrol('n1', ['north']);
  await f.enrol('n2', ['north']);
  await f.push('web', webCompose(1));
});

afterEach(async () => {
  await f.close();
  await broker.close();
});

/** The signed envelope of a command, once the publisher has issued it, opened and verified. */
async function signed(site: string, seq: number): Promise<Command> {
  const row = await waitFor(
    () => {
      const r = f.controller.store.commands.get(site, seq);
      return r?.envelope ? r : undefined;
    },
    { message: `envelope of ${site}#${seq}` },
  );
  const bytes = new Uint8Array(row.envelope!);
  const parts = parseSign1(bytes, COMMAND_LIMITS);
  expect(verifySign1(parts, f.signer.publicKey)).toBe(true);
  return check(CommandHeaderSchema, decode(parts.payload, COMMAND_LIMITS), 'command') as Command;
}

const BERLIN = {
  tz: 'Europe/Berlin',
  windows: [{ days: ['mon', 'tue', 3, 4, 5], start: '02:00', end: '04:30' }],
};

describe('[MW-7] API', () => {
  test('site and group windows are stored, read back, audited and cleared; the site overrides its group', async () => {
    const put = await f.call('PUT', '/v1/groups/north/maintenance', {
      tz: 'UTC',
      windows: [{ start: '22:00', end: '01:00' }],
    });
    expect(put.status, put.text).toBe(200);
    expect(put.json.policy).toEqual({
      tz: 'UTC',
      windows: [{ days: [1, 2, 3, 4, 5, 6, 7], start: '22:00', end: '01:00' }],
    });

    let got = await f.call('GET', '/v1/sites/n1/maintenance');
    expect(got.status).toBe(200);
    expect(got.json.policy).toBeNull();
    expect(got.json.effective).toMatchObject({ source: 'group:north', tz: 'UTC' });

    expect((await f.call('PUT', '/v1/sites/n1/maintenance', BERLIN)).status).toBe(200);
    got = await f.call('GET', '/v1/sites/n1/maintenance');
    expect(got.json.policy).toEqual({
      tz: 'Europe/Berlin',
      windows: [{ days: [1, 2, 3, 4, 5], start: '02:00', end: '04:30' }],
    });
    expect(got.json.effective).toMatchObject({ source: 'site', tz: 'Europe/Berlin' });
    expect(got.json.updatedBy).toBe('admin');
    // stored in the compact wire form
    expect(f.controller.store.maintenance.get('site', 'n1')?.policy).toEqual({
      tz: 'Europe/Berlin',
      w: [{ d: 31, s: '02:00', e: '04:30' }],
    });

    expect((await f.call('DELETE', '/v1/sites/n1/maintenance')).status).toBe(204);
    expect((await f.call('DELETE', '/v1/sites/n1/maintenance')).status).toBe(404);
    got = await f.call('GET', '/v1/sites/n1/maintenance');
    expect(got.json.effective).toMatchObject({ source: 'group:north' });
    expect((await f.call('DELETE', '/v1/groups/north/maintenance')).status).toBe(204);
    expect((await f.call('GET', '/v1/sites/n1/maintenance')).json.effective).toBeNull();

    const actions = f.controller.store.db
      .prepare("SELECT action, outcome FROM audit WHERE action LIKE '%maintenance%' ORDER BY seq")
      .all() as { action: string; outcome: string }[];
    expect(actions.map((a) => `${a.action}:${a.outcome}`)).toEqual([
      'group.maintenance.set:ok',
      'site.maintenance.set:ok',
      'site.maintenance.clear:ok',
      expect.stringMatching(/^site\.maintenance\.clear:/),
      'group.maintenance.clear:ok',
    ]);
    expect(verifyChain(f.controller.store.db).ok).toBe(true);
  });

  test.each([
    ['unknown time zone', { tz: 'Mars/Olympus', windows: [{ start: '01:00', end: '02:00' }] }, 'body.tz'],
    ['bad start', { tz: 'UTC', windows: [{ start: '25:00', end: '02:00' }] }, 'body.windows[0].start'],
    ['bad end', { tz: 'UTC', windows: [{ start: '01:00', end: '2:00' }] }, 'body.windows[0].end'],
    [
      'bad weekday',
      { tz: 'UTC', windows: [{ days: ['funday'], start: '01:00', end: '02:00' }] },
      'body.windows[0].days[0]',
    ],
    [
      'weekday 8',
      { tz: 'UTC', windows: [{ days: [8], start: '01:00', end: '02:00' }] },
      'body.windows[0].days[0]',
    ],
    ['no windows', { tz: 'UTC', windows: [] }, 'body.windows'],
    ['unknown key', { tz: 'UTC', windows: [{ start: '01:00', end: '02:00', x: 1 }] }, 'body.windows[0]'],
  ])('refuses %s with problem+json naming the field (%#)', async (_what, body, path) => {
    const r = await f.call('PUT', '/v1/sites/n1/maintenance', body);
    expect(r.status, r.text).toBe(400);
    expect(r.contentType).toContain('application/problem+json');
    expect(r.json.code).toBe('invalid-request');
    expect(JSON.stringify(r.json)).toContain(path);
    expect(f.controller.store.maintenance.get('site', 'n1')).toBeUndefined();
  });

  test('unknown site or group: 404', async () => {
    expect((await f.call('PUT', '/v1/sites/nope/maintenance', BERLIN)).status).toBe(404);
    expect((await f.call('PUT', '/v1/groups/nope/maintenance', BERLIN)).status).toBe(404);
    expect((await f.call('GET', '/v1/groups/nope/maintenance')).status).toBe(404);
  });

  test('the OpenAPI document lists the routes', async () => {
    const doc = await f.call('GET', '/docs/json');
    expect(Object.keys(doc.json.paths)).toEqual(
      expect.arrayContaining(['/v1/sites/{site}/maintenance', '/v1/groups/{group}/maintenance']),
    );
  });
});

describe('[MW-7] commands carry the effective window', () => {
  test('deployments, restarts and removes for the site carry mw in the signed envelope; force travels too', async () => {
    expect((await f.call('PUT', '/v1/sites/n1/maintenance', BERLIN)).status).toBe(200);
    expect(
      (
        await f.call('PUT', '/v1/groups/north/maintenance', {
          tz: 'UTC',
          windows: [{ start: '22:00', end: '01:00' }],
        })
      ).status,
    ).toBe(200);
    const dep = await f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'north' } });
    expect(dep.status, dep.text).toBe(201);

    const n1 = await signed('n1', 1);
    expect(n1.type).toBe('stack.apply');
    expect((n1.body as { mw?: unknown }).mw).toEqual({
      tz: 'Europe/Berlin',
      w: [{ d: 31, s: '02:00', e: '04:30' }],
    });
    const n2 = await signed('n2', 1);
    expect((n2.body as { mw?: unknown }).mw).toEqual({ tz: 'UTC', w: [{ s: '22:00', e: '01:00' }] });
    expect((n2.body as { force?: unknown }).force).toBeUndefined();

    const restart = await f.call('POST', '/v1/sites/n1/commands', { type: 'stack.restart', stack: 'web' });
    expect(restart.status, restart.text).toBe(201);
    const forced = await f.call('POST', '/v1/deployments', {
      stack: 'web',
      target: { sites: ['n1'] },
      force: true,
    });
    expect(forced.status, forced.text).toBe(201);
    const cmds = f.controller.store.db
      .prepare("SELECT seq, type FROM commands WHERE site = 'n1' ORDER BY seq")
      .all() as { seq: number; type: string }[];
    const last = cmds.at(-1)!;
    // the forced apply collapsed the pending restart (I4) or follows it; either way it is signed with force
    const fa = await signed('n1', last.seq);
    expect(fa.type).toBe('stack.apply');
    expect(fa.body).toMatchObject({ force: true, mw: { tz: 'Europe/Berlin' } });

    // a state.request is not gated: no mw
    const sr = await f.call('POST', '/v1/sites/n1/commands', { type: 'state.request' });
    expect(sr.status).toBe(201);
    const s = await signed('n1', sr.json.seq);
    expect(s.type).toBe('state.request');
    expect((s.body as Record<string, unknown>)['mw']).toBeUndefined();

    // after clearing, new commands carry no window (commands already signed keep theirs)
    expect((await f.call('DELETE', '/v1/sites/n1/maintenance')).status).toBe(204);
    expect((await f.call('DELETE', '/v1/groups/north/maintenance')).status).toBe(204);
    const rm = await f.call('POST', '/v1/sites/n1/commands', { type: 'stack.remove', stack: 'web' });
    expect(rm.status, rm.text).toBe(201);
    const r = await signed('n1', rm.json.seq);
    expect(r.type).toBe('stack.remove');
    expect((r.body as Record<string, unknown>)['mw']).toBeUndefined();
  });
});

describe('[MW-7] operator CLI: outpost sites maintenance', () => {
  test('window arguments', () => {
    expect(parseWindowArg('mon-fri 02:00-04:30')).toEqual({
      days: [1, 2, 3, 4, 5],
      start: '02:00',
      end: '04:30',
    });
    expect(parseWindowArg('sat,sun 22:00-02:00')).toEqual({ days: [6, 7], start: '22:00', end: '02:00' });
    expect(parseWindowArg('fri-mon 22:00-02:00')).toEqual({
      days: [1, 5, 6, 7],
      start: '22:00',
      end: '02:00',
    });
    expect(parseWindowArg('daily 01:00-03:00')).toEqual({ start: '01:00', end: '03:00' });
    expect(parseWindowArg('01:00-03:00')).toEqual({ start: '01:00', end: '03:00' });
    expect(() => parseWindowArg('funday 01:00-03:00')).toThrow(/unknown day/);
    expect(() => parseWindowArg('mon 1-3')).toThrow(/expected/);
  });

  test('set, get, clear against the API', async () => {
    const url = await f.controller.app.listen({ host: '127.0.0.1', port: 0 });
    const cli = async (args: string[]) => {
      let out = '';
      let err = '';
      const sink = (add: (s: string) => void) => ({
        write: (s: string) => {
          add(s);
          return true;
        },
        isTTY: false,
        columns: 120,
      });
      const code = await run(args, {
        stdout: sink((x) => {
          out += x;
        }),
        stderr: sink((x) => {
          err += x;
        }),
        env: { OUTPOST_API: url, OUTPOST_TOKEN: ADMIN_TOKEN },
        cwd: process.cwd(),
        signal: new AbortController().signal,
      });
      return { code, out, err };
    };
    let r = await cli([
      'sites',
      'maintenance',
      'n1',
      'set',
      '--tz',
      'Europe/Berlin',
      '--window',
      'mon-fri 02:00-04:30',
      '--window',
      'sun 22:00-02:00',
    ]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe('n1 maintenance: mon,tue,wed,thu,fri 02:00-04:30; sun 22:00-02:00 (Europe/Berlin)\n');
    expect(f.controller.store.maintenance.get('site', 'n1')?.policy).toEqual({
      tz: 'Europe/Berlin',
      w: [
        { d: 31, s: '02:00', e: '04:30' },
        { d: 64, s: '22:00', e: '02:00' },
      ],
    });
    r = await cli(['sites', 'maintenance', 'n1']);
    expect(r.code).toBe(0);
    expect(r.out).toContain(
      'effective  mon,tue,wed,thu,fri 02:00-04:30; sun 22:00-02:00 (Europe/Berlin) from site',
    );
    r = await cli([
      'sites',
      'maintenance',
      'n1',
      'set',
      '--tz',
      'Nowhere/Never',
      '--window',
      'daily 01:00-02:00',
    ]);
    expect(r.code).toBe(4);
    expect(r.err).toContain('body.tz');
    r = await cli(['sites', 'maintenance', 'n1', 'clear']);
    expect(r.code).toBe(0);
    expect(f.controller.store.maintenance.get('site', 'n1')).toBeUndefined();
  });
});

/**
 * The operator CLI (`outpost sites|stack|deploy|status|audit`, controller/src/client) against a real
 * controller listening on 127.0.0.1 (temp data dir, test keys), with a real aedes broker and simulated
 * sites that speak the real protocol where commands must progress. The CLI runs in-process with
 * captured streams, and as a child process through cli/main.ts.
 *
 * Governance (DESIGN §5): a viewer's deploy is refused with exit 3 and the API's message; the audit
 * log's hash chain verifies, and after a direct SQLite UPDATE the CLI names the tampered row.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { run } from '../../controller/src/client/cli.js';
import { onCurrentTestFinished, spawnNode, tmpDir, waitFor } from '../helpers/index.js';
import { startBroker, type TestBroker } from './helpers/broker.js';
import { webCompose } from './helpers/compose.js';
import { type Fixture, makeController } from './helpers/fixture.js';
import { ADMIN_TOKEN, controllerSigner, siteSigner, trustFor } from './helpers/keys.js';
import { SimSite, type SimSiteOptions } from './helpers/sim-site.js';

interface CliResult {
  code: number;
  out: string;
  err: string;
}

interface World {
  f: Fixture;
  url: string;
  /** A scratch working directory (no .data/admin.token unless a test writes one). */
  cwd: string;
  broker?: TestBroker;
  site(id: string, opts?: SimSiteOptions): Promise<SimSite>;
  /** Runs the CLI in-process; the admin token and API URL come from the environment unless overridden. */
  cli(
    args: string[],
    o?: { token?: string | null; tty?: boolean; signal?: AbortSignal; env?: Record<string, string> },
  ): Promise<CliResult>;
  /** Same, but resolves with live access to the output while it runs. */
  start(
    args: string[],
    o?: { tty?: boolean; signal?: AbortSignal },
  ): { out: () => string; done: Promise<CliResult> };
}

async function world(o: { broker?: boolean } = {}): Promise<World> {
  const broker = o.broker ? await startBroker() : undefined;
  const f = await makeController(broker ? { brokerUrl: broker.url } : {});
  const url = await f.controller.app.listen({ host: '127.0.0.1', port: 0 });
  const sims: SimSite[] = [];
  onCurrentTestFinished(async () => {
    await f.close();
    for (const s of sims) await s.close();
    await broker?.close();
  });
  const cwd = tmpDir('cli');
  const start: World['start'] = (args, so = {}) => {
    let out = '';
    let err = '';
    const sink = (add: (s: string) => void, tty: boolean) => ({
      write: (s: string) => {
        add(s);
        return true;
      },
      isTTY: tty,
      columns: 120,
    });
    const done = run(args, {
      stdout: sink((s) => {
        out += s;
      }, so.tty ?? false),
      stderr: sink((s) => {
        err += s;
      }, false),
      env: { OUTPOST_API: url, OUTPOST_TOKEN: ADMIN_TOKEN },
      cwd,
      signal: so.signal ?? new AbortController().signal,
    }).then((code) => ({ code, out, err }));
    return { out: () => out, done };
  };
  return {
    f,
    url,
    cwd,
    ...(broker ? { broker } : {}),
    async site(id, opts) {
      if (!broker) throw new Error('world() without a broker');
      const s = new SimSite(id, broker.url, trustFor(controllerSigner()), opts);
      sims.push(s);
      await s.connect();
      return s;
    },
    async cli(args, co = {}) {
      let out = '';
      let err = '';
      const env: Record<string, string> = { OUTPOST_API: url, ...co.env };
      if (co.token !== null) env['OUTPOST_TOKEN'] = co.token ?? ADMIN_TOKEN;
      const code = await run(args, {
        stdout: { write: (s: string) => (out += s), isTTY: co.tty ?? false, columns: 120 },
        stderr: { write: (s: string) => (err += s) },
        env,
        cwd,
        signal: co.signal ?? new AbortController().signal,
      });
      return { code, out, err };
    },
    start,
  };
}

/** Writes a site's uplink public key (base64) where `sites enrol --uplink-key` can read it. */
function uplinkFile(w: World, id: string): string {
  const file = join(w.cwd, `${id}.pub`);
  writeFileSync(file, `${Buffer.from(siteSigner(id).publicKey).toString('base64')}\n`);
  return file;
}

async function viewerToken(f: Fixture, groups = ['north']): Promise<string> {
  expect((await f.call('POST', '/v1/users', { name: 'vera', role: 'viewer', groups })).status).toBe(201);
  const t = await f.call('POST', '/v1/users/vera/tokens', { description: 'cli test' });
  expect(t.status).toBe(201);
  return t.json.token as string;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escape sequences
const ANSI = /\x1b\[/;
/** Cursor to the start of a previous line: a redraw in place. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escape sequences
const REDRAW = /\x1b\[\d+F/;

describe('outpost CLI against a real controller', () => {
  it('enrols sites, pushes a stack, deploys with --watch until applied, then lists sites with their stacks', async () => {
    const w = await world({ broker: true });
    expect((await w.cli(['sites', 'groups', 'create', 'north'])).code).toBe(0);
    for (const id of ['n1', 'n2']) {
      const r = await w.cli([
        'sites',
        'enrol',
        id,
        '--uplink-key',
        uplinkFile(w, id),
        '--group',
        'north',
        '--label',
        'region=north',
      ]);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain(`enrolled ${id} (groups north, labels region=north)`);
    }
    await w.site('n1');
    await w.site('n2');
    await waitFor(async () => (await w.f.call('GET', '/v1/sites?online=true')).json.sites.length === 2, {
      message: 'both sites online',
      timeoutMs: 10_000,
    });

    writeFileSync(join(w.cwd, 'web.yml'), webCompose(1));
    const push = await w.cli(['stack', 'push', 'web.yml', '--name', 'web']);
    expect(push.code, push.err).toBe(0);
    const digest = w.f.controller.store.stacks.revision('web', 1)!.digest;
    expect(push.out).toBe(
      `web: revision 1 (digest sha256:${Buffer.from(digest).toString('hex')}, ${w.f.controller.store.stacks.revision('web', 1)!.spec.length} bytes)\n`,
    );
    const again = await w.cli(['stack', 'push', 'web.yml', '--name', 'web']);
    expect(again.out).toContain('web: unchanged, the latest revision 1 has the same spec');

    const dep = await w.cli([
      'deploy',
      'web',
      '--to',
      'group:north',
      '--watch',
      '--interval',
      '0.1',
      '--timeout',
      '20',
    ]);
    expect(dep.code, dep.out + dep.err).toBe(0);
    const id = /deployment (d-[0-9a-f]{16}): web@1 to group:north, 2 site\(s\)/.exec(dep.out)?.[1];
    expect(id, dep.out).toBeDefined();
    expect(dep.out).toMatch(/^n1\s+1\s+pending$/m);
    expect(dep.out).toMatch(/^n2\s+1\s+pending$/m);
    expect(dep.out).toContain(`${id} web@1 group:north: 2/2 applied`);
    expect(dep.out).not.toMatch(ANSI);
    const view = (await w.f.call('GET', `/v1/deployments/${id}`)).json;
    expect(view.counts).toEqual({ applied: 2 });

    await waitFor(
      async () => {
        const { sites } = (await w.f.call('GET', '/v1/sites')).json;
        return sites.every((s: { state: { stacks: unknown[] } | null }) => s.state?.stacks.length === 1);
      },
      { message: 'state with the stack from both sites' },
    );
    const list = await w.cli(['sites']);
    expect(list.code).toBe(0);
    const lines = list.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^SITE\s+ONLINE\s+LAST CONTACT\s+GROUPS\s+LABELS\s+STACKS \(want\/running health\)$/,
    );
    expect(lines[1]).toMatch(/^n1\s+online\s+\d+s ago\s+north\s+region=north\s+web 1\/1 healthy$/);
    expect(lines[2]).toMatch(/^n2\s+online\s+\d+s ago\s+north\s+region=north\s+web 1\/1 healthy$/);

    const json = await w.cli(['sites', 'list', '--group', 'north', '--json']);
    const parsed = JSON.parse(json.out) as {
      sites: { id: string; online: boolean; state: { stacks: { rev: number }[] } }[];
    };
    expect(parsed.sites.map((s) => [s.id, s.online, s.state.stacks[0]!.rev])).toEqual([
      ['n1', true, 1],
      ['n2', true, 1],
    ]);

    const stacks = await w.cli(['stack', 'list']);
    expect(stacks.out).toMatch(/^web\s+1\s+\S+\s+admin$/m);
    const show = await w.cli(['stack', 'show', 'web@1']);
    expect(show.out).toContain(`web@1  digest sha256:${Buffer.from(digest).toString('hex')}`);
    expect(show.out).toMatch(/^web\s+registry\.local\/acme\/web@sha256:(01){32}\s+8080:80\s+-\s+REV$/m);
    const compose = await w.cli(['stack', 'show', 'web@latest', '--compose']);
    expect(compose.out).toBe(webCompose(1));

    const status = await w.cli(['status']);
    expect(status.code).toBe(0);
    expect(status.out).toContain('fleet: 2 site(s), 2 online, 0 offline, 0 unknown; 0 command(s) in flight');
    expect(status.out).toMatch(/^ {2}web\s+@1: 2$/m);
    expect(status.out).toContain(`${id} web@1 group:north`);
  });

  it('a viewer trying to deploy gets exit 3 and the API message; nothing is created', async () => {
    const w = await world();
    await w.f.enrol('n1', ['north']);
    await w.f.push('web', webCompose(1));
    const viewer = await viewerToken(w.f);

    const r = await w.cli(['deploy', 'web', '--to', 'group:north'], { token: viewer });
    expect(r.code).toBe(3);
    expect(r.out).toBe('');
    expect(r.err).toBe('outpost deploy: forbidden (403): role viewer may not change this\n');
    expect(w.f.controller.store.commands.counts()).toEqual({});

    const j = await w.cli(['deploy', 'web', '--to', 'site:n1', '--json'], { token: viewer });
    expect(j.code).toBe(3);
    expect(JSON.parse(j.err)).toEqual({
      error: { code: 'forbidden', status: 403, message: 'role viewer may not change this', errors: [] },
    });

    // The viewer still reads its groups.
    const list = await w.cli(['sites'], { token: viewer });
    expect(list.code).toBe(0);
    expect(list.out).toMatch(/^n1\s+unknown\s+never\s+north/m);

    const bad = await w.cli(['sites'], { token: 'not-a-token-at-all' });
    expect(bad.code).toBe(3);
    expect(bad.err).toContain('outpost sites: unauthorized (401): the token is unknown, revoked');
    expect(bad.err).toContain('hint: the token from OUTPOST_TOKEN was refused');
    const none = await w.cli(['sites'], { token: null });
    expect(none.code).toBe(3);
    expect(none.err).toContain('hint: no token given');
  });

  it('an invalid Compose file is refused with the path of every offending key (exit 4)', async () => {
    const w = await world();
    const image = `registry.local/acme/web@sha256:${'ab'.repeat(32)}`;
    writeFileSync(
      join(w.cwd, 'bad.yml'),
      `services:\n  web:\n    image: ${image}\n    build: .\n    ports: ["80:80", "99999:80"]\n`,
    );
    const r = await w.cli(['stack', 'push', 'bad.yml', '--name', 'web']);
    expect(r.code).toBe(4);
    expect(r.out).toBe('');
    const lines = r.err.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^outpost stack push: invalid-compose \(422\): services\.web\.\S+: .* \(and 1 more\)$/,
    );
    expect(lines.slice(1).sort()).toEqual([
      expect.stringMatching(/^ {2}services\.web\.build: unsupported key/),
      '  services.web.ports[1]: port 99999 is outside 1..65535',
    ]);
    expect(w.f.controller.store.stacks.get('web')).toBeUndefined();

    writeFileSync(join(w.cwd, 'one.yml'), `services:\n  web:\n    image: ${image}\n    build: .\n`);
    const one = await w.cli(['stack', 'push', 'one.yml', '--name', 'web', '--json']);
    expect(one.code).toBe(4);
    expect(JSON.parse(one.err).error).toMatchObject({
      code: 'invalid-compose',
      status: 422,
      errors: [{ path: 'services.web.build' }],
    });
  });

  it('labels, pins and unpins sites; a deploy skips the pinned site; sites show has it all', async () => {
    const w = await world();
    await w.f.enrol('n1', ['north'], { region: 'north', old: 'x' });
    await w.f.enrol('n2', ['north']);
    await w.f.push('web', webCompose(1));
    await w.f.push('web', webCompose(2));

    const label = await w.cli(['sites', 'label', 'n1', 'tier=edge', 'old-']);
    expect(label.code, label.err).toBe(0);
    expect(label.out).toBe('n1 labels: region=north,tier=edge\n');
    expect(w.f.controller.store.sites.get('n1')!.labels).toEqual({ region: 'north', tier: 'edge' });

    const pin = await w.cli(['sites', 'pin', 'n1', 'web', '1']);
    expect(pin.code, pin.err).toBe(0);
    expect(pin.out).toContain('pinned n1 to web@1');
    const dep = await w.cli(['deploy', 'web@2', '--to', 'tag:region=north']);
    expect(dep.code).toBe(0);
    expect(dep.out).toMatch(/to tag:region=north, 0 site\(s\)/);
    expect(dep.out).toMatch(/^skipped n1: pinned to web@1$/m);

    const show = await w.cli(['sites', 'show', 'n1']);
    expect(show.code).toBe(0);
    expect(show.out).toMatch(/^ {2}pins\s+web@1$/m);
    expect(show.out).toMatch(/^ {2}labels\s+region=north,tier=edge$/m);

    const both = await w.cli(['deploy', 'web@2', '--to', 'site:n1,n2']);
    expect(both.out).toMatch(/^n2\s+1\s+pending$/m);
    expect(await w.cli(['sites', 'unpin', 'n1', 'web'])).toMatchObject({
      code: 0,
      out: 'unpinned n1 from web\n',
    });
    expect(w.f.controller.store.sites.pins('n1')).toEqual({});
    const after = await w.cli(['sites', 'show', 'n2']);
    expect(after.out).toMatch(/^ {2}1\s+stack\.apply\s+web@2\s+pending/m);
  });

  it('exit codes by class: usage 2, not found 4, unreachable 5; --help has examples', async () => {
    const w = await world();
    const help = await w.cli(['deploy', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('examples:');
    expect(help.out).toContain('--to group:north');
    for (const cmd of ['sites', 'stack', 'status', 'audit']) {
      const h = await w.cli([cmd, '--help']);
      expect(h.code).toBe(0);
      expect(h.out).toMatch(/examples:\n {2}outpost /);
    }
    const noTo = await w.cli(['deploy', 'web']);
    expect(noTo).toMatchObject({ code: 2, out: '' });
    expect(noTo.err).toContain('outpost deploy: deploy needs --to');
    expect((await w.cli(['deploy', 'web', '--to', 'region:north'])).code).toBe(2);
    expect((await w.cli(['sites', '--frobnicate'])).code).toBe(2);
    expect((await w.cli(['stack', 'push', 'nope.yml', '--name', 'web'])).code).toBe(2);
    expect((await w.cli(['status', '--watch', '--interval', 'soon'])).code).toBe(2);
    expect((await w.cli(['nonsense'])).code).toBe(2);

    const missing = await w.cli(['sites', 'show', 'ghost']);
    expect(missing.code).toBe(4);
    expect(missing.err).toBe('outpost sites show: unknown-site (404): no site ghost\n');
    expect((await w.cli(['deploy', 'nostack', '--to', 'group:north'])).code).toBe(4);

    const down = await w.cli(['sites', '--api', 'http://127.0.0.1:9'], { env: {} });
    expect(down.code).toBe(5);
    expect(down.err).toContain(
      'outpost sites: unreachable: cannot reach the controller API at http://127.0.0.1:9',
    );
    expect(down.err).toContain('hint: is the controller running?');

    // A controller that accepts the connection and never answers: bounded by --request-timeout.
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    onCurrentTestFinished(() => {
      silent.closeAllConnections();
      return new Promise<void>((r) => silent.close(() => r()));
    });
    const port = (silent.address() as AddressInfo).port;
    const t0 = Date.now();
    const slow = await w.cli(['sites', '--api', `http://127.0.0.1:${port}`, '--request-timeout', '0.3']);
    expect(slow.code).toBe(5);
    expect(slow.err).toContain(
      `outpost sites: timeout: no answer from http://127.0.0.1:${port} within 0.3 s`,
    );
    expect(Date.now() - t0).toBeLessThan(5_000);

    // Token files: an explicit one must exist and hold a token; a wrong one is refused by the API.
    const missingFile = await w.cli(['sites', '--token-file', 'nope.token'], { token: null });
    expect(missingFile.code).toBe(2);
    expect(missingFile.err).toContain('--token-file: cannot read');
    writeFileSync(join(w.cwd, 'empty.token'), '\n');
    expect((await w.cli(['sites', '--token-file', 'empty.token'], { token: null })).code).toBe(2);
    writeFileSync(join(w.cwd, 'wrong.token'), 'opt_000000000000_wrong\n');
    const wrong = await w.cli(['sites', '--token-file', 'wrong.token'], { token: null });
    expect(wrong.code).toBe(3);
    expect(wrong.err).toContain(`hint: the token from ${join(w.cwd, 'wrong.token')} was refused`);
    // An explicit --token-file wins over OUTPOST_TOKEN (here the valid admin token).
    expect((await w.cli(['sites', '--token-file', 'wrong.token'])).code).toBe(3);
    expect((await w.cli(['sites', '--token-file', 'wrong.token', '--token', ADMIN_TOKEN])).code).toBe(0);
  });

  it('status --watch without a TTY prints one line per change and stops at --timeout', async () => {
    const w = await world({ broker: true });
    await w.f.enrol('n1', ['north']);
    await w.f.push('web', webCompose(1));
    const site = await w.site('n1', { autoAck: false });
    await waitFor(async () => (await w.f.call('GET', '/v1/sites/n1')).json.online === true, {
      message: 'n1 online',
    });

    const t0 = Date.now();
    const watch = w.start(['status', '--watch', '--interval', '0.1', '--timeout', '5']);
    await waitFor(() => watch.out().includes('fleet: 1 site(s), 1 online'), { message: 'first fleet line' });
    const dep = await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'north' } });
    expect(dep.status).toBe(201);
    const id = dep.json.id as string;
    await site.waitSeqs(1);
    await waitFor(
      () => watch.out().includes(`deployment ${id} web@1 group:north: applied 0/1 (pending 0, sent 1,`),
      {
        message: 'the sent line',
      },
    );
    await site.ackCommand(site.commands()[0]!, 'accepted');
    await waitFor(() => watch.out().includes('applied 0/1 (pending 0, sent 0, accepted 1, failed 0)'), {
      message: 'the accepted line',
    });
    await site.ackCommand(site.commands()[0]!, 'applied');
    await waitFor(() => watch.out().includes('failed 0) done'), { message: 'the applied line' });
    await site.goOffline();
    await waitFor(() => watch.out().includes('site n1 offline'), { message: 'the offline line' });
    const r = await watch.done;
    const elapsed = Date.now() - t0;

    expect(r.code, r.err).toBe(0);
    expect(elapsed).toBeGreaterThanOrEqual(4_900);
    expect(elapsed).toBeLessThan(15_000);
    expect(r.out).not.toMatch(ANSI);
    const lines = r.out.trimEnd().split('\n');
    for (const l of lines) expect(l).toMatch(/^\d\d:\d\d:\d\d /);
    const progress = lines.filter((l) => l.includes(`deployment ${id}`));
    expect(progress.length).toBeGreaterThanOrEqual(3);
    expect(progress.at(-1)).toMatch(/applied 1\/1 \(pending 0, sent 0, accepted 0, failed 0\) done$/);
    // One line per change: no two consecutive progress lines are the same.
    const bodies = progress.map((l) => l.slice(9));
    expect(new Set(bodies).size).toBe(bodies.length);
    expect(lines.filter((l) => / site n1 /.test(l)).map((l) => l.slice(9))).toEqual(['site n1 offline']);
    expect(lines.at(-2)).toMatch(/ site n1 offline$/);
    expect(lines.at(-3)).toMatch(
      /fleet: 1 site\(s\), 0 online, 1 offline, 0 unknown; 0 command\(s\) in flight$/,
    );
    expect(lines.at(-1)).toMatch(/stopped after --timeout 5s$/);
  });

  it('status --watch on a TTY redraws in place with progress bars; Ctrl-C restores the cursor (exit 130)', async () => {
    const w = await world();
    await w.f.enrol('n1', ['north']);
    await w.f.enrol('n2', ['north']);
    await w.f.push('web', webCompose(1));
    expect(
      (await w.f.call('POST', '/v1/deployments', { stack: 'web', target: { group: 'north' } })).status,
    ).toBe(201);
    const ac = new AbortController();
    const watch = w.start(['status', '--watch', '--interval', '0.05'], { tty: true, signal: ac.signal });
    // A redraw moves the cursor back up over the previous frame.
    await waitFor(() => REDRAW.test(watch.out()), { message: 'a redraw' });
    ac.abort();
    const r = await watch.done;
    expect(r.code).toBe(130);
    expect(r.out.startsWith('\x1b[?25l')).toBe(true);
    expect(r.out.endsWith('\x1b[?25h')).toBe(true);
    expect(r.out).toContain('\x1b[2K');
    expect(r.out).toContain('(Ctrl-C to stop)');
    expect(r.out).toContain('░'.repeat(30));
    expect(r.out).toContain('applied 0/2 (pending 2, sent 0, accepted 0, failed 0)');
    expect(r.err).toBe('stopped\n');

    // --json: JSON lines, one event per change, then the end.
    const j = await w.cli(['status', '--watch', '--json', '--interval', '0.05', '--timeout', '0.5'], {
      tty: true,
    });
    expect(j.code).toBe(0);
    expect(j.out).not.toMatch(ANSI);
    const events = j.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string });
    expect(events.map((e) => e.event)).toEqual(['fleet', 'deployment', 'end']);
    expect(events[0]).toMatchObject({ sites: { total: 2, unknown: 2 }, inFlight: { pending: 2 } });
    expect(events[1]).toMatchObject({ stack: 'web', rev: 1, total: 2, counts: { pending: 2 }, done: false });
  });

  it('deploy --watch gives up at --timeout with exit 1 and names the unfinished sites', async () => {
    const w = await world();
    await w.f.enrol('n1', ['north']);
    await w.f.push('web', webCompose(1));
    const r = await w.cli([
      'deploy',
      'web',
      '--to',
      'site:n1',
      '--watch',
      '--interval',
      '0.1',
      '--timeout',
      '1',
    ]);
    expect(r.code).toBe(1);
    expect(r.out).toContain('timed out: 1 of 1 site(s) not finished: n1 pending');
    expect(r.out).toMatch(/: 0\/1 applied\n$/);
  });

  it('deploy --watch exits 1 when a site fails, naming it and its reason; status lists the failure', async () => {
    const w = await world({ broker: true });
    await w.f.enrol('n1', ['north']);
    await w.f.enrol('n2', ['north']);
    await w.f.push('web', webCompose(1));
    await w.site('n1');
    const n2 = await w.site('n2', { autoAck: false });
    await waitFor(async () => (await w.f.call('GET', '/v1/sites?online=true')).json.sites.length === 2, {
      message: 'both sites online',
    });
    const watch = w.start([
      'deploy',
      'web',
      '--to',
      'group:north',
      '--watch',
      '--interval',
      '0.1',
      '--timeout',
      '20',
    ]);
    await n2.waitSeqs(1);
    const cmd = n2.commands()[0]!;
    await n2.ackCommand(cmd, 'accepted');
    await n2.ackCommand(cmd, 'failed', { rc: 'image-unavailable', msg: 'no mirror has it' });
    const r = await watch.done;
    expect(r.code, r.out + r.err).toBe(1);
    const id = /deployment (d-[0-9a-f]{16})/.exec(r.out)![1]!;
    expect(r.out).toMatch(/^n2 #1 failed \(image-unavailable.*\)$/m);
    expect(r.out.endsWith(`${id} web@1 group:north: 1/2 applied, 1 failed\n`)).toBe(true);

    const status = await w.cli(['status']);
    expect(status.out).toMatch(
      new RegExp(`^ {2}n2 #1 web@1 failed \\(image-unavailable.*\\) \\[${id}\\]$`, 'm'),
    );
    expect(status.out).toContain('applied 1/2 (pending 0, sent 0, accepted 0, failed 1)');
    const j = JSON.parse((await w.cli(['status', '--json'])).out);
    expect(j.failures).toEqual([
      expect.objectContaining({ site: 'n2', seq: 1, status: 'failed', deployment: id }),
    ]);
  });

  it('audit verify passes, then names the row changed by a direct SQLite UPDATE; export writes the log', async () => {
    const w = await world();
    for (const g of ['g1', 'g2', 'g3']) expect((await w.cli(['sites', 'groups', 'create', g])).code).toBe(0);
    const dbFile = join(w.f.dataDir, 'controller.db');

    const ok = await w.cli(['audit', 'verify']);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toMatch(/^audit log ok: \d+ entries, head [0-9a-f]{64} \(http:\/\/127\.0\.0\.1:\d+\)\n$/);
    const offline = await w.cli(['audit', 'verify', '--db', dbFile], { token: null });
    expect(offline.code).toBe(0);
    expect(offline.out).toContain(`audit log ok:`);

    const entries = w.f.controller.store.audit.list(0, 1000);
    const target = entries.find((e) => e.target === 'g2')!;
    const sql = new Database(dbFile);
    sql.exec('DROP TRIGGER audit_no_update');
    sql.prepare("UPDATE audit SET actor = 'mallory' WHERE seq = ?").run(target.seq);
    sql.close();

    const api = await w.cli(['audit', 'verify']);
    expect(api.code).toBe(1);
    expect(api.out).toMatch(
      new RegExp(
        `^audit log BROKEN at seq ${target.seq}: hash does not match the entry content \\(${target.seq - 1} entries verified before it`,
      ),
    );
    const direct = await w.cli(['audit', 'verify', '--db', dbFile, '--json'], { token: null });
    expect(direct.code).toBe(1);
    expect(JSON.parse(direct.out)).toMatchObject({ ok: false, badRow: target.seq, entries: target.seq - 1 });

    const csv = await w.cli(['audit', 'export', '--format', 'csv', '--out', 'audit.csv']);
    expect(csv.code, csv.err).toBe(0);
    expect(csv.err).toMatch(/^exported \d+ bytes to .*audit\.csv\n$/);
    const rows = readFileSync(join(w.cwd, 'audit.csv'), 'utf8').trimEnd().split('\r\n');
    expect(rows[0]).toBe('seq,at,actor,action,target,outcome,before,after,detail,prev,hash');
    expect(rows.length).toBe(w.f.controller.store.audit.list(0, 1000).length + 1);
    expect(rows.some((r) => r.includes(',mallory,'))).toBe(true);

    const jsonl = await w.cli(['audit', 'export', '--db', dbFile], { token: null });
    expect(jsonl.code).toBe(0);
    const lines = jsonl.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: number });
    expect(lines.map((l) => l.seq)).toEqual(
      entries.map((e) => e.seq).concat(lines.slice(entries.length).map((l) => l.seq)),
    );
    expect(jsonl.err).toMatch(/^exported \d+ entries\n$/);

    const viewer = await viewerToken(w.f, ['g1']);
    expect((await w.cli(['audit', 'verify'], { token: viewer })).code).toBe(3);
  });
});

describe('outpost CLI as a child process (cli/main.ts)', () => {
  // Children start tsx from cold: give them room on a loaded machine.
  it('lists sites with --api/--token, and with OUTPOST_API plus the default .data/admin.token', {
    timeout: 90_000,
  }, async () => {
    const w = await world();
    await w.f.enrol('pump-07', ['north'], { region: 'north' });
    const clean = { OUTPOST_API: undefined, OUTPOST_TOKEN: undefined };

    const a = spawnNode('cli/main.ts', ['sites', '--api', w.url, '--token', ADMIN_TOKEN], clean, {
      cwd: w.cwd,
    });
    const ea = await a.exited;
    expect(ea.code, a.output()).toBe(0);
    expect(a.stdout()).toMatch(/^pump-07\s+unknown\s+never\s+north\s+region=north\s+-$/m);

    mkdirSync(join(w.cwd, '.data'), { recursive: true });
    writeFileSync(join(w.cwd, '.data', 'admin.token'), `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    const b = spawnNode('cli/main.ts', ['sites', '--json'], { ...clean, OUTPOST_API: w.url }, { cwd: w.cwd });
    expect((await b.exited).code, b.output()).toBe(0);
    expect((JSON.parse(b.stdout()) as { sites: { id: string }[] }).sites.map((s) => s.id)).toEqual([
      'pump-07',
    ]);

    const c = spawnNode(
      'cli/main.ts',
      ['deploy', 'web', '--to', 'group:north'],
      { ...clean, OUTPOST_API: w.url },
      { cwd: w.cwd },
    );
    expect((await c.exited).code).toBe(4);
    expect(c.stderr()).toContain('outpost deploy: unknown-stack (404): no stack web');
  });

  it('status --watch in a child process stops cleanly on Ctrl-C (SIGINT, exit 130)', {
    timeout: 60_000,
  }, async () => {
    const w = await world();
    await w.f.enrol('n1', ['north']);
    const p = spawnNode(
      'cli/main.ts',
      ['status', '--watch', '--interval', '0.2', '--api', w.url, '--token', ADMIN_TOKEN],
      { OUTPOST_API: undefined, OUTPOST_TOKEN: undefined },
      { cwd: w.cwd },
    );
    await p.waitForOutput('fleet: 1 site(s)', { timeoutMs: 20_000 });
    const exit = await p.kill('SIGINT', { timeoutMs: 10_000 });
    expect(exit).toEqual({ code: 130, signal: null });
    expect(p.stderr()).toBe('stopped\n');
  });
});

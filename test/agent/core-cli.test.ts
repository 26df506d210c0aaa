/**
 * `outpost agent status`: the technician's offline view, read from the agent's database with no
 * broker and no running agent (the real CLI dispatcher in a child process). And the config surface:
 * `--help-config`, env overrides, bad usage.
 */
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { run } from '../../agent/src/cli.js';
import { envName, loadConfig, parseConfig } from '../../agent/src/config.js';
import type { LocalView } from '../../agent/src/local-view.js';
import { spawnNode, tmpDir, waitFor } from '../helpers/index.js';
import { startTestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, startAgent } from './helpers/harness.js';

async function outpost(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnNode('test/agent/helpers/outpost.ts', args);
  const exit = await child.exited;
  return { code: exit.code, stdout: child.stdout(), stderr: child.stderr() };
}

describe('outpost agent status', () => {
  test('prints stacks, revisions, health, queue depths, last contact and alarms from the local database', async () => {
    const broker = await startTestBroker();
    const site = makeSite('pump-7');
    const ctl = new TestController(site.pki, broker.url);
    await ctl.connect();
    const r = await startAgent(site, { broker: broker.url });
    try {
      await waitFor(() => r.agent.status().connected, { message: 'connected' });
      await ctl.apply('historian', 4, spec(['web', 'db'], 4));
      await ctl.waitStatus(1, 'applied');
      r.memory.injectHealthFailure('scada', 2);
      await ctl.apply('scada', 1, spec(['opc'], 1));
      await ctl.waitStatus(2, 'applied');
      await ctl.apply('scada', 2, spec(['opc'], 2));
      await ctl.waitStatus(3, 'rolled-back');
      await waitFor(() =>
        r.agent.status().stacks.some((s) => s.name === 'scada' && s.rev === 1 && s.want === 1),
      );
    } finally {
      await r.close();
      await ctl.close();
      await broker.close();
    }
    const dataDir = join(site.dir, 'data');
    const text = await outpost(['agent', 'status', '--data', dataDir]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('site pump-7');
    expect(text.stdout).toMatch(/historian\s+4\s+4\s+healthy\s+0\s+(web|db):running\/healthy/);
    expect(text.stdout).toMatch(/scada\s+1\s+1\s+healthy/);
    expect(text.stdout).toMatch(/rolled-back \[scada\]/);
    expect(text.stdout).toMatch(/applied seq 3/);
    expect(text.stdout).toMatch(/last contact 20\d\d-/);

    const json = await outpost(['agent', 'status', '--data', dataDir, '--json']);
    expect(json.code).toBe(0);
    const view = JSON.parse(json.stdout) as LocalView;
    expect(view.site).toBe('pump-7');
    expect(view.stacks.map((s) => [s.name, s.desired, s.running, s.health])).toEqual([
      ['historian', 4, 4, 'healthy'],
      ['scada', 1, 1, 'healthy'],
    ]);
    expect(view.journal).toEqual({ done: 2, failed: 1 });
    expect(view.alarms.map((a) => a.code)).toEqual(['rolled-back']);
    expect(view.recent[0]).toMatchObject({
      seq: 3,
      status: 'failed',
      ack: 'rolled-back',
      rc: 'health-timeout',
    });
  }, 60_000);

  test('no database: a clear error and exit 1', async () => {
    const dir = tmpDir('empty');
    const r = await outpost(['agent', 'status', '--data', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no agent database');
  }, 30_000);
});

describe('config', () => {
  test('schema defaults, env overrides (OUTPOST_AGENT_*), CLI overrides win, frozen, paths from the certs layout', async () => {
    const c = await loadConfig({
      env: {
        OUTPOST_AGENT_SITE: 'env-site',
        OUTPOST_AGENT_KEEPALIVE_SEC: '600',
        OUTPOST_AGENT_ALLOW_TAGS: 'true',
      },
      overrides: { site: 'cli-site', certsDir: '/etc/o', dataDir: undefined },
    });
    expect(c.site).toBe('cli-site');
    expect(c.keepaliveSec).toBe(600);
    expect(c.allowTags).toBe(true);
    expect(c.gapHoldMs).toBe(60_000);
    expect(c.cert).toBe('/etc/o/sites/cli-site/site.crt');
    expect(c.uplinkKey).toBe('/etc/o/sites/cli-site/uplink.key');
    expect(c.trustRoot).toBe('/etc/o/trust/trust-root.cbor');
    expect(Object.isFrozen(c)).toBe(true);
    expect(envName('healthRunningForMs')).toBe('OUTPOST_AGENT_HEALTH_RUNNING_FOR_MS');
  });

  test('invalid values are refused with the offending key', () => {
    expect(() => parseConfig({ site: 'Bad Site' })).toThrow(/site/);
    expect(() => parseConfig({ site: 'ok', keepaliveSec: 1 })).toThrow(/keepaliveSec/);
    expect(() => parseConfig({ site: 'ok', broker: 'http://x' })).toThrow(/broker/);
    expect(() => parseConfig({ site: 'ok', surprise: 1 })).toThrow();
  });

  test('--help-config lists every key with its env variable; bad usage exits 64', async () => {
    const outs: string[] = [];
    expect(await run(['--help-config'], { out: (s) => outs.push(s) })).toBe(0);
    const out = outs.join('');
    expect(out).toContain('`OUTPOST_AGENT_GAP_HOLD_MS`');
    expect(out).toContain('`keepaliveSec`');
    const errs: string[] = [];
    expect(await run(['--nope'], { err: (s) => errs.push(s) })).toBe(64);
    expect(errs.join('')).toContain('usage: outpost agent');
    expect(await run(['--site', 'BAD'], { err: (s) => errs.push(s) })).toBe(78);
    expect(errs.join('')).toMatch(/config \/site/);
  });
});

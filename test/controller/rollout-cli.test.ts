/**
 * `outpost rollout …` (controller/src/client/rollout.ts) in-process against a listening API with the
 * rollout routes, a real broker and simulated sites: create --watch to completion, list, show, abort
 * of a finished rollout (exit 4), usage errors (exit 2).
 */
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../controller/src/client/api.js';
import { makeCtx, parse } from '../../controller/src/client/common.js';
import { ROLLOUT_OPTIONS, type RolloutValues, rollout } from '../../controller/src/client/rollout.js';
import { waitFor } from '../helpers/index.js';
import { webCompose } from './helpers/compose.js';
import { ADMIN_TOKEN } from './helpers/keys.js';
import { rolloutWorld } from './helpers/rollout-world.js';

async function cli(url: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    env: { OUTPOST_API: url, OUTPOST_TOKEN: ADMIN_TOKEN },
    signal: new AbortController().signal,
  };
  try {
    const { values, positionals } = parse(args, ROLLOUT_OPTIONS);
    const ctx = makeCtx(io, values, io.signal);
    const code = await rollout(ctx, positionals[0], values as RolloutValues, positionals.slice(1));
    return { code, out, err };
  } catch (e) {
    if (e instanceof ClientError) return { code: e.exit, out, err: `${err}${e.code}: ${e.message}` };
    throw e;
  }
}

describe('outpost rollout', () => {
  it('create --watch follows to completion; list, show; abort of a finished rollout is refused', {
    timeout: 60_000,
  }, async () => {
    const w = await rolloutWorld();
    for (const id of ['c1', 'c2', 'c3']) {
      await w.f.enrol(id, ['plant']);
      await w.site(id);
    }
    await waitFor(() => ['c1', 'c2', 'c3'].every((id) => w.f.controller.store.sites.row(id)?.online === 1), {
      message: 'online',
    });
    await w.f.push('web', webCompose(1));
    const url = await w.api.listen({ host: '127.0.0.1', port: 0 });

    const c = await cli(url, [
      'create',
      'web@1',
      '--to',
      'group:plant',
      '--id',
      'cli-1',
      '--canary',
      '1',
      '--batch',
      'exp',
      '--health',
      '0',
      '--deadline',
      '30',
      '--watch',
      '--interval',
      '0.2',
    ]);
    expect(c.err).toBe('');
    expect(c.code).toBe(0);
    expect(c.out).toMatch(/rollout cli-1 web@1 group:plant: completed, all phases done, 3 site\(s\)/);

    const list = await cli(url, ['list']);
    expect(list.code).toBe(0);
    expect(list.out).toMatch(/cli-1\s+web@1\s+completed\s+3\/3\s+3\s+0\s+healthy 3/);

    const show = await cli(url, ['show', 'cli-1', '--json']);
    expect(JSON.parse(show.out)).toMatchObject({ id: 'cli-1', state: 'completed', counts: { healthy: 3 } });

    const abort = await cli(url, ['abort', 'cli-1', '--reason', 'late']);
    expect(abort.code).toBe(4);
    expect(abort.err).toMatch(/rollout-state: cannot abort rollout cli-1: it is completed/);

    const bad = await cli(url, ['create', 'web', '--to', 'group:plant', '--canary', 'lots']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--canary: expected N or N%/);

    const invalid = await cli(url, ['create', 'web', '--to', 'group:plant', '--success', '2']);
    expect(invalid.code).toBe(4);
    expect(invalid.err).toMatch(/successThreshold/);
  });
});

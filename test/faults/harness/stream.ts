/**
 * Load for fault scenarios: a stream of deployments (a new revision of one of `stacks` to `sites`
 * every `everyMs`) that keeps going while components die — a deployment the controller cannot answer
 * is simply not counted (I1 covers only 2xx answers).
 */
import type { FaultSystem } from './system.js';

export interface Stream {
  /** Deployments answered 201 / not answered so far. */
  readonly ok: number;
  readonly down: number;
  /** Stops after the deployment under way; resolves with the number answered 201. */
  stop(): Promise<number>;
}

export function deployStream(
  sys: FaultSystem,
  sites: readonly string[],
  opts: { stacks?: readonly string[]; everyMs?: number; ttlSec?: number } = {},
): Stream {
  const stacks = opts.stacks ?? ['app', 'cfg'];
  const everyMs = opts.everyMs ?? 400;
  let stopped = false;
  let ok = 0;
  let down = 0;
  let i = 0;
  const loop = (async () => {
    while (!stopped) {
      const stack = stacks[i++ % stacks.length]!;
      const r = await sys.deploy(stack, sites, opts.ttlSec ? { ttlSec: opts.ttlSec } : {});
      if (r.status === 201) ok++;
      else down++;
      await new Promise((res) => setTimeout(res, r.status === 201 ? everyMs : Math.max(everyMs, 500)));
    }
  })();
  return {
    get ok() {
      return ok;
    },
    get down() {
      return down;
    },
    async stop() {
      stopped = true;
      await loop;
      return ok;
    },
  };
}

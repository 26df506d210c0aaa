/**
 * The simulator leaves nothing behind when the process that started it exits without closing it
 * (an uncaught error in a benchmark): node children exit when their IPC channel closes, and the
 * spawned Mosquitto is killed by an exit hook (scripts/sim/brokers.ts).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { mosquittoBinary } from '../../scripts/bench/lib/brokers.js';
import { portOpen } from '../../scripts/sim/brokers.js';
import { spawnNode, waitFor } from '../helpers/index.js';

/** Running (a zombie awaiting its reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('fleet simulator cleanup', () => {
  test.skipIf(!mosquittoBinary())(
    'Mosquitto does not outlive a parent that exits without closing it',
    async () => {
      const p = spawnNode('test/sim/fixtures/exit-with-mosquitto.ts');
      const line = await p.waitForOutput(/^pid \d+ port \d+$/m, { timeoutMs: 60_000 });
      const [, pid, port] = /pid (\d+) port (\d+)/.exec(line)!.map(Number) as [number, number, number];
      expect(await p.exited).toEqual({ code: 3, signal: null });
      await waitFor(() => !alive(pid), {
        timeoutMs: 30_000,
        message: `mosquitto (pid ${pid}) still running`,
      });
      expect(await portOpen(port)).toBe(false);
    },
    120_000,
  );
});

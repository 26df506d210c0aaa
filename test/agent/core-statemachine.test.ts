/**
 * Property test of the agent's command state machine (fast-check): any delivery order of a
 * controller's command stream, with duplicates and interleaved execution, ends in the same place as
 * applying the stream in seq order, with no effect applied twice (I2), no older revision applied after
 * a newer one for the same stack (I3, I4), and every command finished.
 */
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { tmpDir, waitFor } from '../helpers/index.js';
import { spec, TestController } from './helpers/controller.js';
import { makeCore } from './helpers/core.js';
import { makePki } from './helpers/pki.js';

const STACKS = ['a', 'b', 'c'] as const;

const scenario = fc
  .array(
    fc.record({
      stack: fc.constantFrom(...STACKS),
      kind: fc.constantFrom('apply', 'apply', 'apply', 'remove'),
    }),
    {
      minLength: 1,
      maxLength: 12,
    },
  )
  .chain((cmds) =>
    fc.record({
      cmds: fc.constant(cmds),
      order: fc.shuffledSubarray(
        cmds.map((_, i) => i),
        { minLength: cmds.length, maxLength: cmds.length },
      ),
      dups: fc.array(fc.nat(cmds.length - 1), { maxLength: 4 }),
      yields: fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }),
    }),
  );

test('any delivery order and duplication converges to the in-order result, each effect once', async () => {
  const dir = tmpDir('sm');
  const pki = makePki(`${dir}/certs`, 'site-a');
  const ctl = new TestController(pki, 'mqtt://unused');
  let run = 0;
  await fc.assert(
    fc.asyncProperty(scenario, async ({ cmds, order, dups, yields }) => {
      const core = makeCore(tmpDir(`sm-${run++}`), pki);
      try {
        const envelopes = cmds.map((c, i) =>
          c.kind === 'apply'
            ? ctl.applyCmd(c.stack, i + 1, spec(['web'], i + 1), { seq: i + 1, prev: i })
            : ctl.command('stack.remove', { stack: c.stack }, { seq: i + 1, prev: i }),
        );
        const deliveries = [...order, ...dups];
        for (const [k, idx] of deliveries.entries()) {
          expect(core.deliver(envelopes[idx]!)).toBe(true);
          if (yields[k % yields.length]) await new Promise((r) => setImmediate(r));
        }
        await waitFor(() => core.store.openJournal().length === 0, { timeoutMs: 5000, message: 'quiescent' });
        await waitFor(() => Object.keys(core.sequencer.depths()).length === 0, { timeoutMs: 5000 });

        // every command finished: applied, or superseded by a newer one of its stack
        for (let s = 1; s <= cmds.length; s++) {
          expect(['done', 'superseded']).toContain(core.store.journalBySeq(s)?.status);
        }
        // final state = the last command of each stack in seq order
        const snap = await core.runtime.snapshot();
        for (const stack of STACKS) {
          const last = cmds
            .map((c, i) => ({ ...c, seq: i + 1 }))
            .filter((c) => c.stack === stack)
            .at(-1);
          const got = snap.find((x) => x.name === stack);
          if (!last || last.kind === 'remove') expect(got).toBeUndefined();
          else expect(got?.rev).toBe(last.seq);
        }
        const creates = core.runtime.effects.filter((e) => e.op === 'create');
        // I2: no revision created twice
        expect(new Set(creates.map((e) => `${e.stack}@${e.rev}`)).size).toBe(creates.length);
        // I3/I4: per stack, revisions applied in increasing seq order
        for (const stack of STACKS) {
          const revs = creates.filter((e) => e.stack === stack).map((e) => e.rev);
          expect(revs).toEqual([...revs].sort((x, y) => x - y));
        }
        expect(core.sequencer.watermark).toEqual({ contig: cmds.length, applied: cmds.length });
      } finally {
        await core.close();
      }
    }),
    { numRuns: 60 },
  );
}, 120_000);

test('the journal is pruned to journalKeep finished entries; a pruned seq is still a replay', async () => {
  const dir = tmpDir('prune');
  const pki = makePki(`${dir}/certs`, 'site-a');
  const ctl = new TestController(pki, 'mqtt://unused');
  const core = makeCore(`${dir}/db`, pki, { journalKeep: 16 });
  try {
    const first = ctl.command('heartbeat', { last: 1 });
    core.deliver(first);
    for (let i = 2; i <= 200; i++) core.deliver(ctl.command('heartbeat', { last: i }));
    const rows = core.store.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM journal').get()?.n ?? 0;
    expect(rows).toBeLessThanOrEqual(16 + 64);
    expect(core.store.journalBySeq(1)).toBeUndefined();
    expect(core.sequencer.watermark).toEqual({ contig: 200, applied: 200 });
    // the same bytes again: no longer in the journal, but at or below the watermark -> replay
    expect(core.journal.intake(first)).toEqual({ kind: 'handled', rc: 'replay' });
  } finally {
    await core.close();
  }
});

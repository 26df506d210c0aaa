/**
 * The soak (scripts/soak.sh) in its short form for the default test run: 60 s of continuous
 * deployments to five sites with link chaos (cuts, resets, blackholes, 64 kbit/s throttling, refused
 * connections) and SIGKILLs of random components, some armed to die at named fault points; then the
 * system quiesces and the ledger must be clean (I1 nothing lost, I2 at most one effect, I3 order).
 * OUTPOST_SOAK_SECONDS lengthens it; `scripts/soak.sh 30m` is the long run (docs/RELIABILITY.md).
 */
import { expect, test } from 'vitest';
import { summarise } from './harness/ledger.js';
import { runSoak } from './harness/soak.js';

const SECONDS = Number(process.env['OUTPOST_SOAK_SECONDS'] ?? 60);

test(
  `soak ${SECONDS} s: chaos on links and processes, then a clean ledger (I1, I2, I3)`,
  async () => {
    const lines: string[] = [];
    const report = await runSoak({
      durationMs: SECONDS * 1000,
      sites: 5,
      seed: Number(process.env['OUTPOST_SOAK_SEED'] ?? 0x50a4),
      // Denser than the long soak, so a minute sees every kind of fault.
      killEveryMs: 8_000,
      linkEveryMs: 1_500,
      rolloutEveryMs: 12_000,
      log: (l) => lines.push(l),
    });
    const l = report.ledger;
    process.stdout.write(
      `soak-short: seed ${report.seed}, deployments ${report.deployments.ok} (+${report.deployments.refused} refused), ` +
        `rollouts ${JSON.stringify(report.rollouts)}, faults ${report.faultsTotal} ${JSON.stringify(report.faults)}; ` +
        `${summarise(l)}\n`,
    );
    const detail = [
      ...lines,
      ...l.losses,
      ...l.duplicates,
      ...l.order,
      ...l.unexpected,
      ...l.open.slice(0, 20),
    ];
    expect(report.quiesced, detail.join('\n')).toBe(true);
    expect(l.losses, detail.join('\n')).toEqual([]);
    expect(l.duplicates).toEqual([]);
    expect(l.order).toEqual([]);
    expect(l.unexpected).toEqual([]);
    expect(l.created).toBeGreaterThan(10);
    expect(report.faultsTotal).toBeGreaterThanOrEqual(10);
    expect(Object.keys(report.faults).some((k) => k.includes('SIGKILL'))).toBe(true);
  },
  (SECONDS + 420) * 1000,
);

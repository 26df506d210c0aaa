/** Assertions shared by the fault scenarios (vitest only; scripts/soak.ts reports instead). */
import { expect } from 'vitest';
import { type LedgerReport, summarise } from './ledger.js';

/** Asserts a clean ledger (I1, I2, I3), with every violation in the failure message. */
export function expectCleanLedger(r: LedgerReport): void {
  const detail = JSON.stringify(
    {
      losses: r.losses.slice(0, 20),
      duplicates: r.duplicates.slice(0, 20),
      order: r.order.slice(0, 20),
      unexpected: r.unexpected.slice(0, 20),
      open: r.open.slice(0, 20),
    },
    null,
    1,
  );
  expect(r.ok, `${summarise(r)}\n${detail}`).toBe(true);
  expect(r.created).toBeGreaterThan(0);
  expect(r.creates).toBeGreaterThan(0);
}

/**
 * `node --import tsx scripts/soak.ts DURATION [--sites N] [--seed S] [--json FILE] [--keep]`
 * (use scripts/soak.sh). Runs test/faults/harness/soak.ts for DURATION and prints the report; exit
 * code 0 when the ledger is clean (no loss, no duplicate, no order violation, everything final), 1
 * otherwise, 64 on bad usage. With --keep (or on failure) the working folder with every component's
 * log and database is kept and named.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runSoak } from '../test/faults/harness/soak.js';

function duration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`bad duration ${JSON.stringify(text)} (e.g. 90s, 30m, 2h)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[unit]!);
}

const OPTIONS = {
  sites: { type: 'string' },
  seed: { type: 'string' },
  json: { type: 'string' },
  keep: { type: 'boolean' },
} as const;

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ allowPositionals: true, options: OPTIONS });
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n`);
    return 64;
  }
  const { values, positionals } = parsed;
  let durationMs: number;
  try {
    if (positionals.length !== 1) throw new Error('give exactly one DURATION');
    durationMs = duration(positionals[0]!);
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n`);
    return 64;
  }
  const say = (s: string) => void process.stdout.write(`${new Date().toISOString()} ${s}\n`);
  const report = await runSoak({
    durationMs,
    ...(values.sites ? { sites: Number(values.sites) } : {}),
    ...(values.seed ? { seed: Number(values.seed) } : {}),
    ...(values.keep ? { keep: true } : {}),
    log: say,
  });
  const l = report.ledger;
  const lines = [
    '',
    `soak result (seed ${report.seed}, ${Math.round(report.durationMs / 1000)} s, ${report.sites} sites)`,
    `  deployments      ${report.deployments.ok} answered 201, ${report.deployments.refused} refused while a component was down`,
    `  rollouts         ${report.rollouts.started} started: ${JSON.stringify(report.rollouts.states)}`,
    `  commands         ${l.commands} stack commands (${l.created} answered 2xx): ${JSON.stringify(l.byStatus)}`,
    `  effects          ${l.effects} container effects at the sites (${l.creates} creates)`,
    `  faults injected  ${report.faultsTotal}: ${JSON.stringify(report.faults)}`,
    `  losses           ${l.losses.length}`,
    `  duplicates       ${l.duplicates.length}`,
    `  order            ${l.order.length}`,
    `  unexpected       ${l.unexpected.length}`,
    `  not final        ${l.open.length}${report.quiesced ? '' : ' (did not quiesce)'}`,
    `  broker RSS       ${report.brokerRssKb ?? '?'} kB at the end`,
    `  verdict          ${report.ok ? 'CLEAN' : 'VIOLATIONS'}`,
  ];
  for (const [what, xs] of [
    ['loss', l.losses],
    ['duplicate', l.duplicates],
    ['order', l.order],
    ['unexpected', l.unexpected],
    ['open', l.open],
  ] as const)
    for (const x of xs.slice(0, 20)) lines.push(`  ${what}: ${x}`);
  process.stdout.write(`${lines.join('\n')}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
  return report.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`soak: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(70);
  },
);

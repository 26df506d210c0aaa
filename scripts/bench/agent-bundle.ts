/**
 * Agent memory experiments on the bundle: builds a variant of the shipped agent bundle
 * (scripts/build-agent.ts, dist/outpost-agent.cjs) with esbuild options on top of the shipped ones,
 * written inside the checkout (.tmp/agent-bundle/, so that better-sqlite3 resolves from node_modules),
 * to measure it with agent-diag.ts. Used for the comparisons in docs/adr/0007-agent-bundle.md.
 *
 *   npx tsx scripts/bench/agent-bundle.ts NAME '{"keepNames":true}'     → prints the variant's path
 *   npx tsx scripts/bench/agent-diag.ts --main .tmp/agent-bundle/NAME.cjs
 *
 * An ES module variant needs `'{"format":"esm"}'` and the name NAME.mjs: the banner then defines the
 * `require` and `__filename` the CommonJS output relies on.
 */
import { join } from 'node:path';
import type { BuildOptions } from 'esbuild';
import { buildAgentBundle, REPO } from '../build-agent.js';

export async function bundleVariant(name: string, overrides: BuildOptions = {}): Promise<string> {
  const esm = overrides.format === 'esm';
  const out = join(REPO, '.tmp', 'agent-bundle', esm ? `${name}.mjs` : `${name}.cjs`);
  const b = await buildAgentBundle(out, {
    ...(esm
      ? {
          banner: {
            js:
              "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url); " +
              'const __filename = new URL(import.meta.url).pathname; const __outpostBundleUrl = import.meta.url;',
          },
        }
      : {}),
    ...overrides,
  });
  return b.file;
}

if (process.argv[1]?.endsWith('agent-bundle.ts')) {
  const [name = 'variant', json = '{}'] = process.argv.slice(2);
  bundleVariant(name, JSON.parse(json) as BuildOptions).then(
    (p) => void process.stdout.write(`${p}\n`),
    (err: unknown) => {
      process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}

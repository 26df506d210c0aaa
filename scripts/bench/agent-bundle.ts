/**
 * Agent memory experiment (not shipped): bundles `outpost agent` (dist/agent/src/cli.js and everything it
 * imports) into ONE minified ESM file with esbuild, to measure what bundling would save on the idle
 * heap (fewer module records, smaller retained sources, unused exports dropped). The modules lean.ts
 * stubs become the same kind of stand-in inside the bundle; better-sqlite3 (native) and what the agent
 * loads through createRequire stay external and load from node_modules at run time, so the bundle is
 * written inside the repository (.tmp/agent-bundle/agent.mjs).
 *
 *   npx tsx scripts/bench/agent-bundle.ts            → prints the bundle's path
 *   npx tsx scripts/bench/agent-diag.ts --main .tmp/agent-bundle/agent.mjs
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';
import { LEAN_STUBS } from '../../agent/src/lean.js';

export const REPO = join(import.meta.dirname, '..', '..');

export async function bundleAgent(outDir = join(REPO, '.tmp', 'agent-bundle')): Promise<string> {
  mkdirSync(outDir, { recursive: true });
  const entry = join(outDir, 'entry.mjs');
  writeFileSync(
    entry,
    `import { run } from ${JSON.stringify(join(REPO, 'dist', 'agent', 'src', 'cli.js'))};\n` +
      'const [cmd, ...args] = process.argv.slice(2);\n' +
      "if (cmd !== 'agent') throw new Error('usage: agent.mjs agent [options]');\n" +
      'run(args).then((code) => { process.exitCode = code; });\n',
  );
  const out = join(outDir, 'agent.mjs');
  const stubbed = new RegExp(
    `^(${Object.keys(LEAN_STUBS)
      .map((s) => s.replace(/[/@]/g, '\\$&'))
      .join('|')})$`,
  );
  await build({
    entryPoints: [entry],
    outfile: out,
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['better-sqlite3', 'cbor-extract'],
    // CommonJS inside an ESM bundle needs a require for node built-ins.
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'warning',
    plugins: [
      {
        name: 'lean-stubs',
        setup(b) {
          b.onResolve({ filter: stubbed }, (a) => ({ path: a.path, namespace: 'lean-stub' }));
          b.onLoad({ filter: /.*/, namespace: 'lean-stub' }, (a) => ({
            contents: `const fail = () => { throw new Error(${JSON.stringify(`${a.path} is not loaded in the agent`)}); };
const stub = () => new Proxy(function stub() {}, {
  get: (_t, p) => (p === '__esModule' ? false : typeof p === 'symbol' || p === 'then' ? undefined : stub()),
  apply: fail,
  construct: fail,
});
module.exports = stub();`,
            loader: 'js',
          }));
        },
      },
    ],
  });
  return out;
}

if (process.argv[1]?.endsWith('agent-bundle.ts')) {
  bundleAgent().then(
    (p) => void process.stdout.write(`${p}\n`),
    (err: unknown) => {
      process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}

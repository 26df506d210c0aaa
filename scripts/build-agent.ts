/**
 * The shipped agent (`npm run build`, after tsc; docs/adr/0007-agent-bundle.md): `outpost agent` and
 * everything it imports, bundled with esbuild into ONE minified CommonJS file, dist/outpost-agent.cjs,
 * which bin/outpost-agent runs. Memory budget, DESIGN §7: ≤ 50 MB RSS idle.
 *
 * Why each choice (measured with scripts/bench/agent.ts and agent-diag.ts):
 * - one file: one retained source string (minified) instead of hundreds of module sources, no unused
 *   exports, no per-module records;
 * - CommonJS, not ESM: node never loads its ES module loader (~2 MB RSS for an .mjs entry vs a .cjs
 *   one); the sources' `import.meta.url` becomes the bundle's file URL, dynamic `import()`s of our own
 *   modules become lazy inits inside the bundle;
 * - MQTT.js inside the bundle: agent/src/core/mqtt-connect.ts loads `mqtt/lib/client` on first use with
 *   `createRequire(import.meta.url)(…)`; here that call becomes a bundled `require` (same laziness);
 * - the lean tables of agent/src/lean.ts resolve to the same stand-ins as the CommonJS hook does
 *   unbundled (stubs, absent optional add-ons, shims), for the same importing packages only;
 * - TypeBox's compiler is replaced by validators generated now (protocol/src/aot.ts), so the agent
 *   never compiles schemas at run time;
 * - external, loaded from node_modules at run time: better-sqlite3 (native addon; `bindings` locates
 *   it from its own files), and whatever the sources load with createRequire and are not listed here
 *   (tweetnacl, only where the runtime lacks Ed25519).
 *
 * Output, written atomically: dist/outpost-agent.cjs (+ .map, linked; + .LEGAL.txt, the third-party
 * license comments). The bundle must stay inside the checkout or an installed package next to its
 * node_modules (better-sqlite3 resolves from there). A smoke run (`--help`) checks it loads.
 *
 *   npx tsx scripts/build-agent.ts [--quiet]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { type BuildOptions, build, type Metafile, type Plugin } from 'esbuild';
import { fromPackage, LEAN_ABSENT, LEAN_SHIMS, LEAN_STUBS } from '../agent/src/lean.js';
import { aotCompilerModule } from '../protocol/src/aot.js';
import * as schemas from '../protocol/src/schemas.js';

export const REPO = join(import.meta.dirname, '..');
export const AGENT_BUNDLE = join(REPO, 'dist', 'outpost-agent.cjs');

/**
 * Packages the agent loads only in some configurations, each bundled and minified into a file of its
 * own next to the bundle and required from there on first use: `yaml` parses YAML config files only
 * (~0.25 MB RSS if it were in the bundle while unused; ~2 MB more if loaded unbundled from node_modules).
 */
export const LAZY_CHUNKS: Readonly<Record<string, string>> = { yaml: 'outpost-agent-yaml.cjs' };
const LEAN = join(REPO, 'agent', 'src', 'lean.ts');
const SCHEMAS = join(REPO, 'protocol', 'src', 'schemas.ts');

/** Specifiers our sources load with `createRequire(import.meta.url)(…)` that belong inside the bundle. */
export const BUNDLED_LAZY_REQUIRES: readonly string[] = ['mqtt/lib/client'];

// \`node dist/outpost-agent.cjs [agent] [options]\`: a leading \`agent\` (as in \`outpost agent …\`) is accepted.
const ENTRY = `import { run } from './agent/src/cli.ts';
const args = process.argv.slice(2);
if (args[0] === 'agent') args.shift();
run(args).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(\`outpost agent: \${err?.stack ?? err}\\n\`);
    process.exit(70);
  },
);
`;

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** The lean tables (agent/src/lean.ts) as esbuild resolutions, limited to the same importing packages. */
function leanPlugin(): Plugin {
  const tables = [
    ['stub', LEAN_STUBS],
    ['absent', LEAN_ABSENT],
    ['shim', LEAN_SHIMS],
  ] as const;
  const requests = [...new Set(tables.flatMap(([, t]) => Object.keys(t)))];
  const filter = new RegExp(`^(${requests.map(escapeRe).join('|')})$`);
  const body: Record<(typeof tables)[number][0], (r: string) => string> = {
    stub: (r) => `module.exports = require(${JSON.stringify(LEAN)}).unavailable(${JSON.stringify(r)});`,
    absent: (r) => `throw require(${JSON.stringify(LEAN)}).absent(${JSON.stringify(r)});`,
    shim: (r) => `module.exports = require(${JSON.stringify(LEAN)}).leanShim(${JSON.stringify(r)});`,
  };
  return {
    name: 'outpost-lean',
    setup(b) {
      b.onResolve({ filter }, (a) => {
        for (const [kind, table] of tables) {
          if (fromPackage(a.importer, table[a.path])) return { path: `${kind}:${a.path}`, namespace: 'lean' };
        }
        return undefined;
      });
      b.onLoad({ filter: /.*/, namespace: 'lean' }, (a) => {
        const [kind, request] = [a.path.slice(0, a.path.indexOf(':')), a.path.slice(a.path.indexOf(':') + 1)];
        return { contents: body[kind as keyof typeof body](request), loader: 'js', resolveDir: REPO };
      });
    },
  };
}

/** LAZY_CHUNKS: the bundle requires them from its own folder. */
function lazyChunkPlugin(): Plugin {
  const filter = new RegExp(`^(${Object.keys(LAZY_CHUNKS).map(escapeRe).join('|')})$`);
  return {
    name: 'outpost-lazy-chunks',
    setup(b) {
      b.onResolve({ filter }, (a) =>
        a.importer.startsWith(join(REPO, 'agent', 'src'))
          ? { path: `./${LAZY_CHUNKS[a.path]}`, external: true }
          : undefined,
      );
    },
  };
}

/** `@sinclair/typebox/compiler`, as imported by protocol/src/schemas.ts, becomes the AOT validators. */
function aotPlugin(report: { compiled: number; interpreted: readonly string[] }): Plugin {
  return {
    name: 'outpost-aot-validators',
    setup(b) {
      b.onResolve({ filter: /^@sinclair\/typebox\/compiler$/ }, (a) =>
        a.importer === SCHEMAS ? { path: 'typebox-compiler', namespace: 'aot' } : undefined,
      );
      b.onLoad({ filter: /.*/, namespace: 'aot' }, () => {
        const m = aotCompilerModule(schemas as Record<string, unknown>, SCHEMAS);
        report.compiled = m.compiled.length;
        report.interpreted = m.interpreted;
        return { contents: m.source, loader: 'js', resolveDir: dirname(SCHEMAS) };
      });
    },
  };
}

/** The package folder of a resolved file (`…/node_modules/<name>` or `…/node_modules/@scope/<name>`). */
function packageRoot(file: string): { root: string; name: string } | undefined {
  const m = /^(.*\/node_modules\/((?:@[^/]+\/)?[^/]+))\//.exec(file);
  return m ? { root: m[1]!, name: m[2]! } : undefined;
}

/**
 * One copy per package version: npm nests identical versions of a package under different parents
 * (readable-stream 4 under both mqtt and bl); the bundle keeps the first copy it meets.
 */
function dedupePlugin(deduped: Set<string>): Plugin {
  const canonical = new Map<string, string>();
  return {
    name: 'outpost-dedupe',
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, async (a) => {
        if (a.pluginData === 'dedupe' || a.namespace !== 'file') return undefined;
        const r = await b.resolve(a.path, {
          kind: a.kind,
          importer: a.importer,
          resolveDir: a.resolveDir,
          pluginData: 'dedupe',
        });
        if (r.errors.length > 0 || r.external || r.namespace !== 'file') return undefined;
        const pkg = packageRoot(r.path);
        if (!pkg) return r;
        let version: string;
        try {
          version = (JSON.parse(readFileSync(join(pkg.root, 'package.json'), 'utf8')) as { version: string })
            .version;
        } catch {
          return r;
        }
        const key = `${pkg.name}@${version}`;
        const first = canonical.get(key);
        if (first === undefined) {
          canonical.set(key, pkg.root);
          return r;
        }
        if (first === pkg.root) return r;
        deduped.add(key);
        return { ...r, path: first + r.path.slice(pkg.root.length) };
      });
    },
  };
}

/** `createRequire(import.meta.url)('<BUNDLED_LAZY_REQUIRES>')` in our sources → a bundled `require`. */
function lazyRequirePlugin(seen: Set<string>): Plugin {
  const call = /createRequire\(import\.meta\.url\)\(\s*(['"])([^'"]+)\1\s*\)/g;
  return {
    name: 'outpost-lazy-requires',
    setup(b) {
      b.onLoad({ filter: /\/(agent|protocol|certs)\/src\/.*\.ts$/ }, (a) => {
        const text = readFileSync(a.path, 'utf8');
        if (!text.includes('createRequire(import.meta.url)(')) return undefined;
        let changed = false;
        const contents = text.replace(call, (all, q: string, spec: string) => {
          if (!BUNDLED_LAZY_REQUIRES.includes(spec)) return all;
          seen.add(spec);
          changed = true;
          return `require(${q}${spec}${q})`;
        });
        return changed ? { contents, loader: 'ts' } : undefined;
      });
    },
  };
}

export interface AgentBundle {
  readonly file: string;
  readonly bytes: number;
  readonly metafile: Metafile;
  readonly aot: { compiled: number; interpreted: readonly string[] };
  /** Packages of which the bundle holds one copy where node_modules has several of the same version. */
  readonly deduped: readonly string[];
  readonly warnings: readonly string[];
}

/** `overrides`: esbuild options on top of the shipped ones (experiments, e.g. scripts/bench/agent-bundle.ts). */
export async function buildAgentBundle(
  out = AGENT_BUNDLE,
  overrides: BuildOptions = {},
): Promise<AgentBundle> {
  const aot = { compiled: 0, interpreted: [] as readonly string[] };
  const seen = new Set<string>();
  const deduped = new Set<string>();
  const r = await build({
    stdin: { contents: ENTRY, resolveDir: REPO, sourcefile: 'outpost-agent-entry.ts', loader: 'ts' },
    outfile: out,
    bundle: true,
    minify: true,
    // Not keepNames: it costs ~1 MB of heap (a property store on every function); our errors set
    // `name` explicitly, and stack traces map back through the source map (node --enable-source-maps).
    keepNames: false,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    tsconfig: join(REPO, 'tsconfig.json'),
    external: ['better-sqlite3'],
    // import() of LAZY_CHUNKS → require(): a dynamic import would load node's ES module loader.
    supported: { 'dynamic-import': false },
    // The global `performance` → lean.ts's leanPerformance (now() without loading perf_hooks).
    define: { 'import.meta.url': '__outpostBundleUrl', performance: 'leanPerformance' },
    inject: [LEAN],
    banner: { js: "const __outpostBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
    sourcemap: 'linked',
    sourcesContent: false,
    legalComments: 'linked',
    logLevel: 'silent',
    plugins: [
      leanPlugin(),
      aotPlugin(aot),
      lazyRequirePlugin(seen),
      lazyChunkPlugin(),
      dedupePlugin(deduped),
    ],
    ...overrides,
    // Always: the outputs are written below (atomically) and the metafile is checked.
    write: false,
    metafile: true,
  });
  const chunks = await Promise.all(
    Object.entries(LAZY_CHUNKS).map(([pkg, file]) =>
      build({
        stdin: { contents: `module.exports = require(${JSON.stringify(pkg)});`, resolveDir: REPO },
        outfile: join(dirname(out), file),
        write: false,
        bundle: true,
        minify: true,
        format: 'cjs',
        platform: 'node',
        target: 'node20',
        legalComments: 'linked',
        logLevel: 'silent',
      }),
    ),
  );
  const warnings = r.warnings.map((w) => `${w.location?.file ?? ''}: ${w.text}`);
  const inputs = Object.keys(r.metafile.inputs);
  // The point of the AOT validators is that the compiler is not in the agent: fail loudly if it is.
  const compiler = inputs.filter((f) => f.includes('node_modules/@sinclair/typebox/build/esm/compiler/'));
  if (compiler.length > 0) throw new Error(`the agent bundle contains TypeBox's compiler (${compiler[0]})`);
  for (const spec of BUNDLED_LAZY_REQUIRES) {
    if (!seen.has(spec))
      warnings.push(
        `no createRequire(import.meta.url)('${spec}') in the sources any more: check that ${spec} is still bundled`,
      );
  }
  mkdirSync(dirname(out), { recursive: true });
  let bytes = 0;
  for (const f of [...r.outputFiles, ...chunks.flatMap((c) => c.outputFiles)]) {
    const tmp = join(dirname(f.path), `.${basename(f.path)}.${process.pid}.tmp`);
    writeFileSync(tmp, f.contents);
    renameSync(tmp, f.path);
    if (f.path === out) bytes = f.contents.byteLength;
  }
  return { file: out, bytes, metafile: r.metafile, aot, deduped: [...deduped].sort(), warnings };
}

/**
 * The bundle loads and its CLI answers (`--help`), and the YAML chunk loads: `status` with a YAML config
 * naming a data folder without a database parses the file, then says there is no database.
 */
export function smokeTest(file = AGENT_BUNDLE): void {
  const out = execFileSync(process.execPath, [file, '--help'], { encoding: 'utf8', timeout: 30_000 });
  if (!out.includes('usage: outpost agent')) throw new Error(`${file} --help printed:\n${out}`);
  const dir = mkdtempSync(join(tmpdir(), 'outpost-build-agent-'));
  try {
    const config = join(dir, 'agent.yaml');
    writeFileSync(config, `site: smoke\ndataDir: ${JSON.stringify(join(dir, 'data'))}\n`);
    const r = spawnSync(process.execPath, [file, 'status', '--config', config], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    if (r.status !== 1 || !r.stderr.includes(`no agent database at ${join(dir, 'data', 'agent.db')}`))
      throw new Error(`${file} status --config ${config}: exit ${r.status}\n${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const quiet = process.argv.includes('--quiet');
  const b = await buildAgentBundle();
  smokeTest(b.file);
  for (const w of b.warnings) process.stderr.write(`build-agent: warning: ${w}\n`);
  if (!quiet)
    process.stdout.write(
      `build-agent: ${b.file.slice(REPO.length + 1)} ${Math.round(b.bytes / 1024)} KB, ` +
        `${Object.keys(b.metafile.inputs).length} inputs, AOT validators for ${b.aot.compiled} schemas` +
        (b.aot.interpreted.length ? ` (interpreted: ${b.aot.interpreted.join(', ')})` : '') +
        (b.deduped.length ? `, one copy of ${b.deduped.join(', ')}` : '') +
        '\n',
    );
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`build-agent: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(1);
  });
}

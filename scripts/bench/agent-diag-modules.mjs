// Agent memory diagnostics: the cost of loading each module the agent loads, one fresh process each
// under the agent's node flags. For each entry: V8 heapUsed after a full GC and RssAnon, before and
// after the import (with lean.ts's stand-ins installed first, as `outpost agent` does).
//
//   node scripts/bench/agent-diag-modules.mjs [specifier…]      (parent: spawns one child per entry)
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const REPO = join(import.meta.dirname, '..', '..');
const dist = (p) => pathToFileURL(join(REPO, 'dist', p)).href;
const FLAGS = [
  '--max-semi-space-size=1',
  '--lite-mode',
  '--no-expose-wasm',
  '--max-old-space-size=64',
  '--v8-pool-size=1',
];
const DEFAULT = [
  'node:zlib',
  'node:worker_threads',
  'node:http',
  'node:tls',
  'cbor-x',
  'tweetnacl',
  '@sinclair/typebox',
  '@sinclair/typebox/compiler',
  '@sinclair/typebox/value',
  'yaml',
  'pino',
  'better-sqlite3',
  'dockerode',
  'mqtt/lib/client',
  dist('protocol/src/cbor.js'),
  dist('protocol/src/index.js'),
  dist('agent/src/config.js'),
  dist('agent/src/runtime/docker.js'),
  dist('agent/src/agent.js'),
  '*agent', // everything outpost agent imports
];

function anonKb() {
  const m = /RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? 0);
}
function fileKb() {
  const m = /RssFile:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? 0);
}

async function child(spec) {
  const { installLeanRequires } = await import(dist('agent/src/lean.js'));
  installLeanRequires();
  const req = createRequire(join(REPO, 'package.json'));
  globalThis.gc();
  const h0 = process.memoryUsage().heapUsed;
  const a0 = anonKb();
  const f0 = fileKb();
  const load = async (s) => (s.startsWith('file:') || s.startsWith('node:') ? import(s) : req(s));
  if (spec === '*agent') {
    for (const s of [
      'pino',
      'dockerode',
      dist('agent/src/agent.js'),
      dist('agent/src/runtime/docker.js'),
      dist('agent/src/config.js'),
      'mqtt/lib/client',
      'better-sqlite3',
    ])
      await load(s);
  } else await load(spec);
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 50));
  globalThis.gc();
  const h1 = process.memoryUsage().heapUsed;
  process.stdout.write(
    JSON.stringify({ heapKb: Math.round((h1 - h0) / 1024), anonKb: anonKb() - a0, fileKb: fileKb() - f0 }),
  );
}

if (process.argv[2] === '--child') {
  await child(process.argv[3]);
} else {
  const specs = process.argv.length > 2 ? process.argv.slice(2) : DEFAULT;
  for (const s of specs) {
    const r = spawnSync(process.execPath, [...FLAGS, '--expose-gc', import.meta.filename, '--child', s], {
      encoding: 'utf8',
      env: { ...process.env, MALLOC_ARENA_MAX: '1', UV_THREADPOOL_SIZE: '2' },
    });
    if (r.status !== 0) {
      process.stdout.write(`${s}: failed ${r.stderr.slice(-400)}\n`);
      continue;
    }
    const o = JSON.parse(r.stdout);
    const name = s.replace(pathToFileURL(join(REPO, 'dist')).href, 'dist');
    process.stdout.write(
      `${name.padEnd(34)} heap +${(o.heapKb / 1024).toFixed(2)} MB  anon +${(o.anonKb / 1024).toFixed(2)} MB  file +${(o.fileKb / 1024).toFixed(2)} MB\n`,
    );
  }
}

/**
 * The agent's memory budget (DESIGN §7, docs/adr/0006-agent-idle-memory.md): modules the idle agent
 * does not need stay unloaded until used. Each case runs in a fresh child process (module state is
 * per process) and reads node's own list of loaded built-ins and CommonJS modules.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, test } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../agent/src/launch.js';
import { REPO_ROOT, tmpDir } from '../helpers/index.js';

const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const src = (p: string) => pathToFileURL(join(REPO_ROOT, p)).href;

/** Runs an ESM snippet under the agent's node flags; returns the JSON it printed last. */
function child(name: string, body: string): Record<string, unknown> {
  const file = join(tmpDir('launch-lazy'), `${name}.mts`);
  writeFileSync(
    file,
    `import { createRequire } from 'node:module';
const req = createRequire(${JSON.stringify(join(REPO_ROOT, 'package.json'))});
const builtin = (m: string) => process.moduleLoadList.includes(\`NativeModule \${m}\`);
const cjs = (pkg: string) => Object.keys(req.cache).some((f) => f.includes(\`/node_modules/\${pkg}/\`));
${body}
`,
  );
  const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, '--import', tsx, file], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
}

describe('lazy loading in the agent process', () => {
  test('the protocol loads zlib only to inflate or deflate a spec, and tweetnacl only when used', () => {
    const r = child(
      'protocol',
      `const p = await import(${JSON.stringify(src('protocol/src/index.ts'))});
const atLoad = { zlib: builtin('zlib'), nacl: cjs('tweetnacl') };
const spec = { svc: { web: { img: 'outpost-test/web', tag: '1', env: { A: 'x'.repeat(200), B: 'x'.repeat(200) } } } };
const plain = p.encodeSpec(spec, 'never');
p.decodeSpec(plain.bytes, plain.z);
const afterPlain = builtin('zlib');
const z = p.encodeSpec(spec, 'auto');
const same = JSON.stringify(p.decodeSpec(z.bytes, z.z)) === JSON.stringify(spec);
console.log(JSON.stringify({ atLoad, afterPlain, deflated: z.z, same, afterZ: builtin('zlib'), ed: p.ed25519.name, naclAfter: cjs('tweetnacl') }));`,
    );
    expect(r['atLoad']).toEqual({ zlib: false, nacl: false });
    expect(r['afterPlain']).toBe(false);
    expect(r['deflated']).toBe(true);
    expect(r['same']).toBe(true);
    expect(r['afterZ']).toBe(true);
    expect(r['ed']).toBe('node');
    expect(r['naclAfter']).toBe(false);
  });

  test('dockerode under the lean requires loads neither zlib nor its build-context modules', () => {
    const r = child(
      'dockerode',
      `const { installLeanRequires } = await import(${JSON.stringify(src('agent/src/lean.ts'))});
const stubbed = installLeanRequires();
const Docker = req('dockerode');
new Docker({ socketPath: '/nonexistent.sock' });
console.log(JSON.stringify({ zlib: builtin('zlib'), tarFs: cjs('tar-fs'), stubbed: [...stubbed].sort() }));`,
    );
    expect(r['zlib']).toBe(false);
    expect(r['tarFs']).toBe(false);
    expect(r['stubbed']).toEqual(expect.arrayContaining(['tar-fs', 'zlib']));
  });
});

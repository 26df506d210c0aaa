/**
 * Agent benchmark helper: verifies stack.apply envelopes (openCommand: COSE parse, Ed25519, strict
 * CBOR, schema) in a loop with the COMPILED protocol (dist/) and prints `{"perSec": N}`; with `sign` as the
 * second argument it signs acks instead (encodeAck: schema, CBOR, Ed25519), the agent's uplink. Run as
 * `node [agent flags] --import tsx scripts/bench/agent-verify.ts [seconds] [sign]` so the agent's V8 settings
 * apply to the code measured (tsx only strips this file's types).
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

type Protocol = typeof import('../../protocol/src/index.js');
const dist = join(import.meta.dirname, '..', '..', 'dist', 'protocol', 'src', 'index.js');

async function main(): Promise<void> {
  const p = (await import(pathToFileURL(dist).href)) as Protocol;
  const seconds = Number(process.argv[2] ?? 2);
  const signer = p.createSigner('online-1', p.generateKeyPair().seed);
  const root = p.createSigner('root-1', p.generateKeyPair().seed);
  const now = Math.floor(Date.now() / 1000);
  const trust = new p.TrustStore({
    v: 1,
    ver: 1,
    iat: now - 60,
    roots: [{ kid: root.kid, pub: root.publicKey }],
    thr: 1,
    keys: [{ kid: signer.kid, pub: signer.publicKey, types: [...p.COMMAND_TYPES] }],
    crit: 2,
  });
  const spec: import('../../protocol/src/index.js').StackSpec = {
    svc: {
      web: { img: 'outpost-test/web', tag: '1', env: { GREETING: 'hello' }, rst: 'unless-stopped' },
      db: { img: 'outpost-test/busybox', tag: '1', cmd: ['sh', '-c', 'sleep 1d'] },
      cache: { img: 'outpost-test/busybox', tag: '1', env: { A: '1', B: '2' } },
    },
  };
  const bytes = p.encodeCommand(
    {
      v: p.PROTOCOL_VERSION,
      site: 'bench',
      seq: 1,
      prev: 0,
      id: new Uint8Array(16),
      iat: now,
      exp: now + 3600,
      type: 'stack.apply',
      body: { stack: 'plant', rev: 1, spec: p.encodeSpec(spec, 'never').bytes },
    } as never,
    signer,
  );
  const ctx = { site: 'bench', trust, nowSec: now };
  const ack: import('../../protocol/src/index.js').Ack = {
    v: p.PROTOCOL_VERSION,
    site: 'bench',
    useq: 1,
    at: now,
    st: 'applied',
    seq: 1,
    id: new Uint8Array(16),
    stack: 'plant',
    rev: 1,
  };
  const op = process.argv[3] === 'sign' ? () => p.encodeAck(ack, signer) : () => p.openCommand(bytes, ctx);
  for (let i = 0; i < 200; i++) op();
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  while (performance.now() < until) {
    for (let i = 0; i < 20; i++) op();
    n += 20;
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  // Per CPU second too: on a shared, loaded machine wall-clock rates mostly measure the other processes.
  const perCpuSec = Math.round((n * 1e6) / (cpu.user + cpu.system));
  process.stdout.write(`${JSON.stringify({ perSec: Math.round((n * 1000) / wall), perCpuSec })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});

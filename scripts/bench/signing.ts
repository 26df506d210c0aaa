/** Envelopes signed and verified per second on one core: node:crypto vs tweetnacl, same run. */
import {
  COMMAND_TYPES,
  type Command,
  createSigner,
  type Ed25519Impl,
  encode,
  encodeCommand,
  encodeTrustRoot,
  generateKeyPair,
  naclEd25519,
  nodeEd25519,
  openCommand,
  openTrustRoot,
  sign1,
  TrustStore,
} from '../../protocol/src/index.js';
import { type BenchOptions, median, type Section } from './types.js';

function command(seq: number): Command {
  const now = Math.floor(Date.now() / 1000);
  return {
    v: 1,
    site: `site-${seq % 10_000}`,
    seq,
    prev: seq - 1,
    id: new Uint8Array(16).fill(seq & 0xff),
    iat: now,
    exp: now + 86_400,
    type: 'heartbeat',
    body: { last: seq },
  };
}

function rate(fn: () => void, ms: number): number {
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    for (let i = 0; i < 50; i++) fn();
    n += 50;
    t = performance.now();
  }
  return (n * 1000) / (t - t0);
}

export async function run(opts: BenchOptions): Promise<Section> {
  const kp = generateKeyPair();
  const root = generateKeyPair();
  const rootSigner = createSigner('root-1', root.seed);
  const trustDoc = openTrustRoot(
    encodeTrustRoot(
      {
        v: 1,
        ver: 1,
        iat: 0,
        roots: [{ kid: 'root-1', pub: root.publicKey }],
        thr: 1,
        keys: [{ kid: 'ctl-1', pub: kp.publicKey, types: [...COMMAND_TYPES] }],
        crit: 1,
      },
      [rootSigner],
    ),
  );
  const trust = new TrustStore(trustDoc);
  const ms = opts.full ? 2000 : 700;
  const results: Record<string, number[]> = {};
  const add = (key: string, v: number): void => {
    results[key] = [...(results[key] ?? []), v];
  };
  const impls: Ed25519Impl[] = [nodeEd25519, naclEd25519];
  for (let r = 0; r < opts.runs; r++) {
    for (const impl of impls) {
      const signer = createSigner('ctl-1', kp.seed, impl);
      let seq = 1;
      // Full envelope: schema check + CBOR encode + COSE_Sign1 + Ed25519.
      const signMs = impl.name === 'tweetnacl' ? ms / 2 : ms;
      add(
        `${impl.name} sign`,
        rate(() => encodeCommand(command(seq++), signer), signMs),
      );
      const env = encodeCommand({ ...command(7), site: 'site-7' }, signer);
      const now = Math.floor(Date.now() / 1000);
      add(
        `${impl.name} verify`,
        rate(() => openCommand(env, { site: 'site-7', trust, nowSec: now, impl }), signMs),
      );
    }
    // Raw signing without schema validation, to show the envelope overhead.
    const raw = createSigner('ctl-1', kp.seed, nodeEd25519);
    const payload = encode(command(1));
    add(
      'node sign (pre-encoded payload)',
      rate(() => sign1(payload, raw), ms),
    );
  }
  const m = (k: string) => median(results[k]!);
  const ratio = m('node sign') / m('tweetnacl sign');
  return {
    title: 'Signing and verification (one core)',
    method:
      'Complete command envelopes (schema check, CBOR encode, COSE_Sign1, Ed25519) signed in a tight loop; ' +
      'verification is the agent path `openCommand` (strict scan, trust lookup, signature, schema, site, expiry). ' +
      `Median of ${opts.runs} runs of ${ms} ms each.`,
    rows: [
      {
        name: 'envelopes signed/s, node:crypto',
        value: m('node sign'),
        unit: '/s',
        target: '≥ 10000',
        ok: m('node sign') >= 10_000,
      },
      { name: 'envelopes signed/s, tweetnacl', value: m('tweetnacl sign'), unit: '/s' },
      { name: 'sign speed ratio node:crypto / tweetnacl', value: ratio, unit: '×' },
      { name: 'envelopes verified/s, node:crypto', value: m('node verify'), unit: '/s' },
      { name: 'envelopes verified/s, tweetnacl', value: m('tweetnacl verify'), unit: '/s' },
      {
        name: 'COSE_Sign1 over a pre-encoded payload/s, node:crypto',
        value: m('node sign (pre-encoded payload)'),
        unit: '/s',
      },
    ],
  };
}

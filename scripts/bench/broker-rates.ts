/**
 * Broker benchmark, part 1 and 2: live QoS 1 throughput and offline-queue drain, for the durable
 * broker (plain TCP, and TLS 1.3 with client certificates), aedes in memory and Mosquitto. The brokers
 * run side by side in their own processes; each run measures every variant once, in an order that
 * rotates from run to run, so the machine's noise hits them alike. Medians are taken by the caller.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { certsLayout, initCerts, issueSiteCert } from '../../certs/src/index.js';
import { type BenchBroker, startBroker, tempDir } from './lib/brokers.js';
import {
  liveThroughput,
  offlineDrain,
  type RateOptions,
  type Target,
  type TlsMaterial,
} from './lib/mqtt-load.js';

export type Variant = 'durable' | 'durable-tls' | 'memory' | 'mosquitto';
export const VARIANTS: readonly Variant[] = ['durable', 'durable-tls', 'memory', 'mosquitto'];

export interface RateSamples {
  /** msgs/s per run, per variant. */
  readonly live: Record<Variant, number[]>;
  readonly drain: Record<Variant, number[]>;
  /** Duplicate deliveries seen (should be 0 on loopback). */
  readonly duplicates: Record<Variant, number>;
}

export interface RateConfig {
  readonly runs: number;
  /** Messages per live run and per drain. */
  readonly n: number;
  readonly payloadBytes: number;
  /** PUBACKs the publisher may wait for at once. */
  readonly window: number;
  readonly log: (line: string) => void;
}

const TLS_SITES = ['bench-tls-live', 'bench-tls-drain'];

async function makePki(): Promise<{ dir: string; tls: (who: string) => TlsMaterial }> {
  const dir = tempDir('pki');
  const certs = join(dir, 'certs');
  await initCerts(certs);
  for (const s of TLS_SITES) await issueSiteCert(certs, s);
  const l = certsLayout(certs);
  const ca = readFileSync(l.caCert);
  const cache = new Map<string, TlsMaterial>();
  const tls = (who: string): TlsMaterial => {
    let m = cache.get(who);
    if (!m) {
      const [cert, key] =
        who === 'controller' ? [l.controllerCert, l.controllerKey] : [l.siteCert(who), l.siteKey(who)];
      m = { ca, cert: readFileSync(cert), key: readFileSync(key) };
      cache.set(who, m);
    }
    return m;
  };
  return { dir: certs, tls };
}

export async function measureRates(c: RateConfig): Promise<RateSamples> {
  const empty = (): Record<Variant, number[]> => ({
    durable: [],
    'durable-tls': [],
    memory: [],
    mosquitto: [],
  });
  const out: RateSamples = {
    live: empty(),
    drain: empty(),
    duplicates: { durable: 0, 'durable-tls': 0, memory: 0, mosquitto: 0 },
  };
  const brokers: BenchBroker[] = [];
  let pkiRoot: string | undefined;
  try {
    const pki = await makePki();
    pkiRoot = join(pki.dir, '..');
    const durable = await startBroker('durable', { certsDir: pki.dir });
    brokers.push(durable);
    const memory = await startBroker('memory');
    brokers.push(memory);
    const mosquitto = await startBroker('mosquitto');
    brokers.push(mosquitto);
    const targets: Record<Variant, { target: Target; live: string; drain: string }> = {
      durable: { target: { port: durable.port }, live: 'bench-live', drain: 'bench-drain' },
      'durable-tls': {
        target: { port: durable.tlsPort!, tls: pki.tls },
        live: 'bench-tls-live',
        drain: 'bench-tls-drain',
      },
      memory: { target: { port: memory.port }, live: 'bench-live', drain: 'bench-drain' },
      mosquitto: { target: { port: mosquitto.port }, live: 'bench-live', drain: 'bench-drain' },
    };
    const timeoutMs = Math.max(60_000, c.n * 10);
    const base = { payloadBytes: c.payloadBytes, window: c.window, timeoutMs };
    // Warm-up (JIT, SQLite pages, TLS session set-up paths): not counted.
    for (const v of VARIANTS) {
      const t = targets[v];
      const warm: Omit<RateOptions, 'site'> = { ...base, n: Math.min(500, c.n) };
      await liveThroughput(t.target, { ...warm, site: t.live });
      await offlineDrain(t.target, { ...warm, site: t.drain });
    }
    for (let r = 0; r < c.runs; r++) {
      const order = VARIANTS.map((_, i) => VARIANTS[(i + r) % VARIANTS.length] as Variant);
      for (const v of order) {
        const t = targets[v];
        const live = await liveThroughput(t.target, { ...base, n: c.n, site: t.live });
        const drain = await offlineDrain(t.target, { ...base, n: c.n, site: t.drain });
        out.live[v].push(live.perSec);
        out.drain[v].push(drain.perSec);
        out.duplicates[v] += live.duplicates + drain.duplicates;
        c.log(`run ${r + 1} ${v}: live ${Math.round(live.perSec)}/s, drain ${Math.round(drain.perSec)}/s`);
      }
    }
    return out;
  } finally {
    for (const b of brokers.reverse()) await b.close();
    if (pkiRoot) rmSync(pkiRoot, { recursive: true, force: true });
  }
}

/**
 * Faults at one site at a time, the whole system running (scenarios d, e, h, i, j of the suite):
 *
 * (d) time: a command queued for a site that comes back "days later" (its clock moved while the link
 *     was down), a clock jump forward and back while online, a fresh device whose clock says 1970
 *     (I6 trusted time [TIME-1], I1 "recorded expired").
 * (e) bad input published straight into the broker with the admin certificate: garbage, forged,
 *     unknown-key, malleated (S + L), wrong-site, oversized and replayed envelopes get typed
 *     rejections and nothing runs (I9, I6, [ORD-4]).
 * (h) a frozen controller (SIGSTOP: TCP and MQTT keepalive fine, no signed heartbeats) raises
 *     `stale-control-plane` in the site's retained status, cleared when heartbeats resume (I10).
 * (i) disk full at the agent (a real tmpfs when we may mount one): commands are not PUBACKed, the
 *     `disk-full` alarm is visible, and everything resumes when space is back (I5, I8).
 * (j) a corrupt agent database at boot: quarantined, `db-corrupt` alarm, the running stack left
 *     alone, and the next deployment resyncs the site (I9, I7).
 *
 * The agent's clock and free-disk view come from its control file (harness/agent-main.ts).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readEffectLog } from '../../agent/src/runtime/memory.js';
import {
  type Command,
  createSigner,
  encodeCommand,
  encodeSpec,
  generateKeyPair,
  PROTOCOL_VERSION,
} from '../../protocol/src/index.js';
import { sleep, waitFor } from '../helpers/index.js';
import { expectCleanLedger } from './harness/assert.js';
import { FaultSystem, type StatusWatch } from './harness/system.js';

const DAY = 24 * 3600 * 1000;
const SITES = ['tclk', 'tbad', 'thb', 'tdisk', 'tdb'];
const DISK_MIN_FREE = 8 * 1024 * 1024;

let sys: FaultSystem;
let watch: StatusWatch;
let tmpfs: string | undefined;
let diskBase: string;
let diskDir: string;

/** A real 32 MiB tmpfs for the disk-full site when we may mount one (root), else undefined. */
function mountTmpfs(dir: string): string | undefined {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m,mode=0700', 'tmpfs', dir], { stdio: 'ignore' });
    return dir;
  } catch {
    return undefined;
  }
}

beforeAll(async () => {
  diskBase = join(process.env['OUTPOST_TEST_TMP'] || tmpdir(), `faults-disk-${process.pid}`);
  tmpfs = mountTmpfs(diskBase);
  diskDir = join(diskBase, 'data');
  sys = await FaultSystem.start({
    sites: SITES,
    // Heartbeats every second to idle sites, so (h) can see them stop.
    controller: { outbox: { heartbeatSec: 1 } },
    dataDirFor: { tdisk: diskDir },
    agentFor: {
      tclk: { gapHoldMs: 3_000 },
      tbad: { maxEnvelopeBytes: 16 * 1024 },
      thb: { heartbeatIntervalSec: 2, heartbeatMissed: 2 },
      tdisk: { diskMinFreeBytes: DISK_MIN_FREE },
      tdb: { gapHoldMs: 2_000 },
    },
  });
  watch = await sys.statusWatch();
}, 240_000);

afterAll(async () => {
  await watch?.close();
  await sys?.close();
  if (tmpfs) {
    try {
      execFileSync('umount', ['-l', tmpfs], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  if (diskBase) rmSync(diskBase, { recursive: true, force: true });
});

const statusOf = (site: string, seq: number) => sys.command(site, seq)?.status;

async function applied(site: string, seq: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(() => statusOf(site, seq) === 'applied', {
    timeoutMs,
    message: `${site}#${seq} applied (now ${statusOf(site, seq)})`,
  });
}

async function deployOne(site: string, opts: { ttlSec?: number } = {}): Promise<number> {
  const r = await sys.deploy('app', [site], opts);
  expect(r.status).toBe(201);
  return r.commands[0]!.seq;
}

describe('(d) time at the site (I6, [TIME-1])', () => {
  test('back after "three days" offline: the queued short-lived command is recorded expired, never run (I1)', async () => {
    const a = sys.agent('tclk');
    const before = await deployOne('tclk');
    await applied('tclk', before);
    a.proxy.refuse(true);
    a.proxy.cut();
    await waitFor(() => watch.latest('tclk')?.online === false, {
      timeoutMs: 30_000,
      message: 'tclk offline',
    });
    const stale = await deployOne('tclk', { ttlSec: 3600 });
    await waitFor(() => (sys.command('tclk', stale)?.attempts ?? 0) > 0, {
      timeoutMs: 30_000,
      message: 'queued at the broker',
    });
    // Three days pass at the site while the link is down.
    sys.setControl('tclk', { clockOffsetMs: 3 * DAY });
    sys.count('clock jump');
    await sleep(500);
    a.proxy.refuse(false);
    await waitFor(() => statusOf('tclk', stale) === 'expired', {
      timeoutMs: 60_000,
      message: `tclk#${stale} recorded expired (now ${statusOf('tclk', stale)})`,
    });
    // A command with the default (7-day) lifetime still applies.
    const fresh = await deployOne('tclk');
    await applied('tclk', fresh);
    sys.setControl('tclk', {});
    expectCleanLedger(sys.ledger());
  }, 180_000);

  test('the clock jumps forward two days and back while online: expiry judged by trusted time, nothing stalls', async () => {
    sys.setControl('tclk', { clockOffsetMs: 2 * DAY });
    sys.count('clock jump');
    await sleep(500);
    const short = await deployOne('tclk', { ttlSec: 3600 });
    await waitFor(() => statusOf('tclk', short) === 'expired', {
      timeoutMs: 60_000,
      message: `tclk#${short} expired (now ${statusOf('tclk', short)})`,
    });
    const long = await deployOne('tclk');
    await applied('tclk', long);
    // The status keeps flowing on the jumped clock (throttles run on monotonic time), and says so.
    await waitFor(() => Date.parse(watch.latest('tclk')?.ts ?? '0') > Date.now() + DAY, {
      timeoutMs: 30_000,
      message: 'status written with the jumped clock',
    });
    // Back to the real time: the trusted-time floor is the signed issued-at seen, so nothing is refused.
    sys.setControl('tclk', {});
    sys.count('clock jump');
    await sleep(500);
    const after = await deployOne('tclk', { ttlSec: 3600 });
    await applied('tclk', after);
    expectCleanLedger(sys.ledger());
  }, 180_000);

  test('a fresh device whose clock says 1970 applies current commands (trusted time from the pinned root)', async () => {
    const site = 'tnew';
    await sys.addAgent(site);
    await sys.enrol([site]);
    sys.setControl(site, { clockOffsetMs: -(Date.now() - 10 * DAY) }); // 1970-01-11
    await sys.startAgent(site);
    const seq = await deployOne(site, { ttlSec: 3600 });
    await applied(site, seq);
    // Its status carries the time it believes; SCADA sees how far off it is.
    await waitFor(() => watch.latest(site)?.ts?.startsWith('1970-'), {
      timeoutMs: 30_000,
      message: 'status with the 1970 clock',
    });
    expectCleanLedger(sys.ledger());
  }, 180_000);
});

/** Ed25519 group order L: S + L is the malleated twin of a valid signature's S. */
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function malleate(envelope: Uint8Array): Uint8Array {
  const out = new Uint8Array(envelope);
  const s = out.subarray(out.length - 32);
  let n = 0n;
  for (let i = 31; i >= 0; i--) n = (n << 8n) | BigInt(s[i]!);
  n += L;
  for (let i = 0; i < 32; i++) {
    s[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

describe('(e) bad input injected into the broker with the admin certificate (I9)', () => {
  test('garbage, forged, unknown-key, malleated, wrong-site, oversized and replayed: typed rejections, nothing runs', async () => {
    const site = 'tbad';
    const a = sys.agent(site);
    const seq = await deployOne(site);
    await applied(site, seq);
    const real = sys.envelope(site, seq);
    const effectsBefore = readEffectLog(a.effectLog).length;
    const acksBefore = new Set((await sys.acks(site)).map((x) => JSON.stringify(x)));
    const nowSec = Math.floor(Date.now() / 1000);
    const cmd = (over: Partial<Command> & { pad?: number } = {}): Command => {
      const { pad, ...rest } = over;
      const spec = encodeSpec(
        {
          svc: {
            web: {
              img: 'registry.local/evil/web',
              dig: new Uint8Array(32).fill(7),
              env: pad
                ? Object.fromEntries(
                    Array.from({ length: Math.ceil(pad / 6000) }, (_, i) => [
                      `EVIL${i}`,
                      randomBytes(4500).toString('base64'),
                    ]),
                  )
                : { EVIL: '1' },
            },
          },
        },
        'never',
      );
      return {
        v: PROTOCOL_VERSION,
        site,
        seq: seq + 50,
        prev: seq + 49,
        id: new Uint8Array(randomBytes(16)),
        iat: nowSec,
        exp: nowSec + 3600,
        type: 'stack.apply',
        body: { stack: 'app', rev: 9_999, spec: spec.bytes },
        ...rest,
      } as Command;
    };
    const stranger = createSigner(sys.pki.signingKid, generateKeyPair().seed);
    const signer = sys.pki.signer();
    const cases: [string, Uint8Array, string][] = [
      ['garbage', new Uint8Array(randomBytes(300)), 'malformed'],
      ['forged: the real kid, another key', encodeCommand(cmd(), stranger), 'bad-signature'],
      ['unknown key', encodeCommand(cmd(), createSigner('evil-1', generateKeyPair().seed)), 'unknown-key'],
      ['malleated signature (S + L) of a real command', malleate(real), 'bad-signature'],
      ['signed for another site', encodeCommand(cmd({ site: 'tclk' }), signer), 'wrong-site'],
      ['oversized (18 KiB > the 16 KiB cap)', encodeCommand(cmd({ pad: 18_000 }), stranger), 'too-large'],
      ['a seen seq with a new id', encodeCommand(cmd({ seq, prev: seq - 1 }), signer), 'replay'],
    ];
    const admin = await sys.adminClient();
    const topic = `outpost/v1/site/${site}/cmd`;
    for (const [, bytes] of cases) await admin.publishAsync(topic, Buffer.from(bytes), { qos: 1 });
    // The exact bytes of the applied command again: a duplicate, re-acked with its recorded status.
    await admin.publishAsync(topic, Buffer.from(real), { qos: 1 });
    sys.count('bad envelope', cases.length + 1);
    const fresh = async () => (await sys.acks(site)).filter((x) => !acksBefore.has(JSON.stringify(x)));
    await waitFor(
      async () => {
        const got = await fresh();
        return (
          got.filter((x) => x.st === 'rejected').length >= cases.length &&
          got.some((x) => x.st === 'applied' && x.seq === seq)
        );
      },
      { timeoutMs: 30_000, message: 'a rejection ack for every bad envelope, a re-ack for the duplicate' },
    );
    const got = await fresh();
    const rcs = got.filter((x) => x.st === 'rejected').map((x) => x.rc);
    for (const [label, , rc] of cases) expect(rcs, label).toContain(rc);
    expect(
      got.some((x) => x.st === 'applied' && x.seq === seq),
      'duplicate re-acked applied',
    ).toBe(true);
    // Forgeries never name a real command ([ACK-3]): only the signed replay carries a seq.
    expect(got.filter((x) => x.st === 'rejected' && x.rc !== 'replay').every((x) => x.seq === null)).toBe(
      true,
    );
    expect(statusOf(site, seq)).toBe('applied');

    // Bigger than the broker's packet cap: the broker drops the publisher, the agent never sees it.
    const tooBigBefore = await sys.metric('outpost_broker_rejects_total', { reason: 'packet-too-large' });
    const big = await sys.adminClient();
    const closed = new Promise<void>((r) => big.once('close', () => r()));
    big.publish(topic, Buffer.alloc(300 * 1024, 1), { qos: 1 });
    await closed;
    await sys.endClient(big);
    expect(await sys.metric('outpost_broker_rejects_total', { reason: 'packet-too-large' })).toBe(
      tooBigBefore + 1,
    );
    sys.count('bad envelope');

    await sleep(1_000);
    expect(readEffectLog(a.effectLog)).toHaveLength(effectsBefore);
    expect(a.proc?.exitInfo).toBeUndefined();
    // Still serving real commands.
    const next = await deployOne(site);
    await applied(site, next);
    expectCleanLedger(sys.ledger());
  }, 180_000);
});

describe('(h) heartbeats stop while every connection stays up (I10)', () => {
  test('SIGSTOP the controller: stale-control-plane in the retained status; cleared after SIGCONT', async () => {
    const site = 'thb';
    await waitFor(() => watch.latest(site)?.online === true && !watch.hasAlarm(site, 'stale-control-plane'), {
      timeoutMs: 30_000,
      message: 'thb online, heartbeats arriving',
    });
    const ctl = sys.controller!;
    process.kill(ctl.pid, 'SIGSTOP');
    sys.count('controller SIGSTOP');
    try {
      // K = 2 intervals of 2 s without a signed message.
      await waitFor(() => watch.hasAlarm(site, 'stale-control-plane'), {
        timeoutMs: 30_000,
        message: 'stale-control-plane raised',
      });
      // MQTT liveness could not tell: the controller's connection never dropped.
      expect(watch.controller()?.online).toBe(true);
      expect(watch.latest(site)?.online).toBe(true);
      expect(watch.latest(site)?.controlAge).toBeGreaterThanOrEqual(4);
    } finally {
      process.kill(ctl.pid, 'SIGCONT');
    }
    await waitFor(() => !watch.hasAlarm(site, 'stale-control-plane'), {
      timeoutMs: 30_000,
      message: 'alarm cleared once heartbeats resume',
    });
  }, 120_000);
});

describe('(i) disk full at the agent (I5, I8)', () => {
  test(`commands withheld (no PUBACK) with a disk-full alarm; resumed when space is back`, async () => {
    const site = 'tdisk';
    const filler = join(diskDir, 'filler');
    const fill = () => {
      if (!tmpfs) {
        sys.setControl(site, { diskFree: 0 });
        return;
      }
      const s = statfsSync(diskDir);
      const bytes = s.bavail * s.bsize - DISK_MIN_FREE / 2;
      const fd = openSync(filler, 'w');
      try {
        const chunk = Buffer.alloc(1024 * 1024, 0xaa);
        for (let left = bytes; left > 0; left -= chunk.length)
          writeSync(fd, chunk, 0, Math.min(left, chunk.length));
      } finally {
        closeSync(fd);
      }
    };
    const free = () => (tmpfs ? rmSync(filler, { force: true }) : sys.setControl(site, {}));
    const before = await deployOne(site);
    await applied(site, before);
    fill();
    sys.count('disk full');
    process.stdout.write(
      `(i) disk full ${tmpfs ? `on a real tmpfs (${diskBase})` : 'by the injected free-space view'}\n`,
    );
    try {
      const seq = await deployOne(site);
      await waitFor(() => watch.hasAlarm(site, 'disk-full'), {
        timeoutMs: 30_000,
        message: 'disk-full alarm',
      });
      await sleep(2_000);
      // Not journalled, not acked: the broker still holds it for the site (I5).
      expect(statusOf(site, seq)).toBe('published');
      free();
      await applied(site, seq);
      await waitFor(() => !watch.hasAlarm(site, 'disk-full'), {
        timeoutMs: 30_000,
        message: 'alarm cleared',
      });
    } finally {
      free();
    }
    expectCleanLedger(sys.ledger());
  }, 180_000);
});

describe('(j) corrupt agent database at boot (I9, I7)', () => {
  test('quarantined, db-corrupt alarm, running stack untouched; the next deployment resyncs the site', async () => {
    const site = 'tdb';
    const a = sys.agent(site);
    const seq = await deployOne(site);
    await applied(site, seq);
    await sys.killAgent(site);
    // Garbage over the database header and first pages and over the WAL header (a bad flash block):
    // with its header gone the WAL is ignored, so nothing masks the broken main file.
    for (const [file, bytes] of [
      ['agent.db', 8192],
      ['agent.db-wal', 32],
    ] as const) {
      const fd = openSync(join(a.dataDir, file), 'r+');
      writeSync(fd, randomBytes(bytes), 0, bytes, 0);
      closeSync(fd);
    }
    sys.count('db corruption');
    const effectsBefore = readEffectLog(a.effectLog).length;
    const proc = await sys.startAgent(site);
    expect(proc.output()).toContain('database corrupt: quarantined, starting clean');
    expect(readdirSync(a.dataDir).some((f) => /^agent\.db\.corrupt-/.test(f))).toBe(true);
    await waitFor(() => watch.hasAlarm(site, 'db-corrupt'), {
      timeoutMs: 30_000,
      message: 'db-corrupt alarm',
    });
    // The controller's view of the site (the agent's full state) carries the alarm.
    await waitFor(
      async () =>
        ((await sys.api('GET', `/sites/${site}`)).json?.state?.alarms ?? []).some(
          (x: { code: string }) => x.code === 'db-corrupt',
        ),
      { timeoutMs: 30_000, message: 'controller sees db-corrupt' },
    );
    // I7: the stack it was running was neither removed nor re-created.
    expect(readEffectLog(a.effectLog)).toHaveLength(effectsBefore);
    const next = await deployOne(site);
    await applied(site, next);
    expectCleanLedger(sys.ledger());
  }, 180_000);
});

/**
 * I9 (bad input is harmless) and I2 (a duplicate delivery executes once), through a real broker:
 * every bad envelope gets a typed, signed `rejected` ack with its reason code and a log line, and
 * nothing executes. [ACK-3]: seq/id only when the signature verified for this site, `ref` always.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import type { MemoryRuntime } from '../../agent/src/runtime/memory.js';
import {
  createSigner,
  encodeApproval,
  encodeSpec,
  envelopeRef,
  generateKeyPair,
  type StackSpec,
} from '../../protocol/src/index.js';
import { sleep, waitFor } from '../helpers/index.js';
import { startTestBroker, type TestBroker } from './helpers/broker.js';
import { spec, TestController } from './helpers/controller.js';
import { makeSite, type RunningAgent, startAgent, type TestSite } from './helpers/harness.js';

let broker: TestBroker;
let site: TestSite;
let ctl: TestController;
let running: (RunningAgent & { memory: MemoryRuntime }) | undefined;
let logLines: Record<string, unknown>[];

beforeEach(async () => {
  broker = await startTestBroker();
  site = makeSite('site-a');
  ctl = new TestController(site.pki, broker.url);
  await ctl.connect();
  logLines = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n'))
        if (l) logLines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  running = await startAgent(
    site,
    { broker: broker.url, maxEnvelopeBytes: 8192 },
    { log: pino({ level: 'info' }, sink) },
  );
  await waitFor(() => running?.agent.status().connected, { message: 'agent connected' });
});

afterEach(async () => {
  await running?.close();
  await ctl.close();
  await broker.close();
});

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

async function expectUnreadRejection(bytes: Uint8Array, rc: string) {
  await ctl.publish(bytes);
  const ref = envelopeRef(bytes);
  const ack = await ctl.waitAck(
    (a) => a.ref !== undefined && hex(a.ref) === hex(ref),
    5000,
    `rejection ${rc}`,
  );
  expect(ack.st).toBe('rejected');
  expect(ack.rc).toBe(rc);
  // A forgery can never make the controller believe a real command was rejected ([ACK-3]).
  expect(ack.seq).toBeUndefined();
  expect(ack.id).toBeUndefined();
  await waitFor(() => logLines.find((l) => l['rc'] === rc && l['ref'] === hex(ref)), {
    message: `log line ${rc}`,
  });
  return ack;
}

/** S + L: the malleated twin of a valid signature (tweetnacl alone would accept it). */
function malleate(envelope: Uint8Array): Uint8Array {
  const L = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
  ];
  const out = new Uint8Array(envelope);
  const s = out.length - 32;
  let carry = 0;
  for (let i = 0; i < 32; i++) {
    const v = out[s + i]! + L[i]! + carry;
    out[s + i] = v & 0xff;
    carry = v >> 8;
  }
  return out;
}

describe('I9: bad input gets a typed rejection and changes nothing', () => {
  test('forged, wrong-key, malleated, wrong-site, oversized and garbage envelopes', async () => {
    const stranger = createSigner('stranger', generateKeyPair().seed);
    await expectUnreadRejection(
      ctl.applyCmd('x', 1, spec(), { seq: 1, prev: 0, signer: stranger }),
      'unknown-key',
    );
    const impostor = createSigner('online-1', generateKeyPair().seed);
    await expectUnreadRejection(
      ctl.applyCmd('x', 1, spec(), { seq: 1, prev: 0, signer: impostor }),
      'bad-signature',
    );
    await expectUnreadRejection(malleate(ctl.applyCmd('x', 1, spec(), { seq: 1, prev: 0 })), 'bad-signature');
    await expectUnreadRejection(
      ctl.applyCmd('x', 1, spec(), { seq: 1, prev: 0, site: 'site-b' }),
      'wrong-site',
    );
    const big = spec(['web'], 1);
    big.svc['web']!.env = { PAD: 'x'.repeat(8000) };
    await expectUnreadRejection(ctl.applyCmd('x', 1, big, { seq: 1, prev: 0 }), 'too-large');
    await expectUnreadRejection(new Uint8Array(randomBytes(300)), 'malformed');
    await expectUnreadRejection(new Uint8Array([0xd2, 0x84, 0x40, 0xa0]), 'malformed');
    await expectUnreadRejection(new Uint8Array(0), 'malformed');
    expect(running!.memory.effects).toEqual([]);
    // nothing journalled: the first real command still starts the chain
    expect(running!.agent.status().contig).toBe(0);
    await ctl.apply('x', 1, spec(), { seq: 1, prev: 0 });
    await ctl.waitStatus(1, 'applied');
    // no log line carries a payload
    expect(JSON.stringify(logLines)).not.toContain('registry.local');
  });

  test('expired: rejected with seq/id (authentic) and its chain slot is filled, so no gap', async () => {
    const now = Math.floor(Date.now() / 1000);
    await ctl.apply('x', 1, spec(), { iat: now - 7200, exp: now - 3600 });
    const ack = await ctl.waitStatus(1, 'rejected');
    expect(ack.rc).toBe('expired');
    expect(ack.id).toBeInstanceOf(Uint8Array);
    await ctl.apply('x', 2);
    await ctl.waitStatus(2, 'applied', 5000);
    expect(running!.memory.effects.filter((e) => e.op === 'create').map((e) => e.rev)).toEqual([2]);
  });

  test('not-yet-valid: rejected with seq/id but not journalled, so the slot stays open', async () => {
    const now = Math.floor(Date.now() / 1000);
    await ctl.apply('x', 1, spec(), { seq: 1, prev: 0, iat: now + 48 * 3600, exp: now + 49 * 3600 });
    expect((await ctl.waitStatus(1, 'rejected')).rc).toBe('not-yet-valid');
    expect(running!.agent.status().contig).toBe(0);
    await ctl.apply('x', 1, spec(), { seq: 1, prev: 0 });
    await ctl.waitStatus(1, 'applied');
  });

  test('replay: another envelope with a seen seq or id, or a seq at or below the watermark', async () => {
    const first = ctl.applyCmd('x', 1, spec(), { seq: 1, prev: 0, id: new Uint8Array(16).fill(7) });
    await ctl.publish(first);
    await ctl.waitStatus(1, 'applied');
    // same seq, new id and content
    await ctl.publish(ctl.applyCmd('x', 9, spec(['web'], 9), { seq: 1, prev: 0 }));
    // same id, new seq
    await ctl.publish(
      ctl.applyCmd('x', 8, spec(['web'], 8), { seq: 2, prev: 1, id: new Uint8Array(16).fill(7) }),
    );
    const replays = await waitFor(() => {
      const r = ctl.acks.filter((a) => a.st === 'rejected' && a.rc === 'replay');
      return r.length === 2 ? r : undefined;
    });
    expect(replays.map((a) => a.seq)).toEqual([1, 2]);
    // seq 2 is still free: a genuine seq 2 is accepted
    await ctl.apply('x', 2, spec(['web'], 2), { seq: 2, prev: 1 });
    await ctl.waitStatus(2, 'applied');
    expect(running!.memory.effects.filter((e) => e.op === 'create').map((e) => e.rev)).toEqual([1, 2]);
  });

  test('site policy: undigested image and unapproved critical spec are rejected policy; approved passes', async () => {
    const tagged: StackSpec = { svc: { web: { img: 'registry.local/acme/web', tag: '1.0' } } };
    await ctl.apply('t', 1, tagged);
    expect((await ctl.waitStatus(1, 'rejected')).rc).toBe('policy');
    const priv: StackSpec = {
      svc: { plc: { img: 'registry.local/acme/plc', dig: new Uint8Array(32).fill(1), priv: true } },
    };
    await ctl.apply('p', 1, priv);
    expect((await ctl.waitStatus(2, 'rejected')).rc).toBe('policy');
    // one approval is not enough (crit = 2)
    const enc = encodeSpec(priv, 'never');
    const approval = (i: number) =>
      encodeApproval(
        { v: 1, stack: 'p', rev: 2, dig: enc.digest, iat: Math.floor(Date.now() / 1000) },
        site.pki.approvers[i]!,
      );
    await ctl.send('stack.apply', { stack: 'p', rev: 2, spec: enc.bytes, appr: [approval(0), approval(0)] });
    expect((await ctl.waitStatus(3, 'rejected')).rc).toBe('policy');
    expect(running!.memory.effects).toEqual([]);
    await ctl.send('stack.apply', { stack: 'p', rev: 2, spec: enc.bytes, appr: [approval(0), approval(1)] });
    await ctl.waitStatus(4, 'applied');
    // volume deletion needs approvals too
    await ctl.send('stack.remove', { stack: 'p', vols: true });
    expect((await ctl.waitStatus(5, 'rejected')).rc).toBe('policy');
    expect(await running!.memory.snapshot()).toHaveLength(1);
  });
});

describe('I2: duplicate delivery executes once', () => {
  test('the same envelope twice while pending and once more after it applied', async () => {
    const bytes = ctl.applyCmd('x', 1, spec(['a', 'b'], 1));
    await ctl.publish(bytes);
    await ctl.publish(bytes);
    await ctl.waitStatus(1, 'applied');
    await ctl.publish(bytes);
    await waitFor(() => ctl.acksFor(1).filter((a) => a.st === 'applied').length === 2, {
      message: 're-ack applied',
    });
    await sleep(300);
    const sts = ctl.acksFor(1).map((a) => a.st);
    expect(sts.filter((s) => s === 'accepted')).toHaveLength(2);
    expect(sts.filter((s) => s === 'applied')).toHaveLength(2);
    expect(running!.memory.effects.filter((e) => e.op === 'create')).toHaveLength(2); // a and b, once each
    expect(logLines.filter((l) => l['msg'] === 'duplicate delivery: re-acked')).toHaveLength(2);
  });
});

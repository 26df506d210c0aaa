/**
 * Crash safety of the outbox (I1, I2, I5): the controller runs as a child process and is SIGKILLed at
 * its fault points. After a restart every committed command reaches its site, each seq once, none
 * skipped (prev links stay unbroken), and a resend carries exactly the bytes signed before the crash.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FaultPoint } from '../../controller/src/fault.js';
import { envelopeRef, privateKeyToPem } from '../../protocol/src/index.js';
import {
  freePort,
  onCurrentTestFinished,
  type Spawned,
  spawnNode,
  tmpDir,
  waitFor,
} from '../helpers/index.js';
import { startBroker, type TestBroker } from './helpers/broker.js';
import { webCompose } from './helpers/compose.js';
import {
  ADMIN_TOKEN,
  CONTROLLER_KID,
  controllerSigner,
  seedOf,
  siteSigner,
  trustFor,
} from './helpers/keys.js';
import { SimSite } from './helpers/sim-site.js';

const SITES = ['c1', 'c2', 'c3'];

interface Child {
  readonly proc: Spawned;
  readonly url: string;
}

class Harness {
  readonly dir = tmpDir('crash');
  readonly sims: SimSite[] = [];
  port = 0;
  constructor(readonly broker: TestBroker) {
    mkdirSync(join(this.dir, 'certs', 'signing'), { recursive: true });
    writeFileSync(
      join(this.dir, 'certs', 'signing', `${CONTROLLER_KID}.key`),
      privateKeyToPem(seedOf('controller')),
      { mode: 0o600 },
    );
    writeFileSync(
      join(this.dir, 'controller.yaml'),
      'outbox:\n  retryMs: 500\n  maxRetryMs: 1000\n  tickMs: 50\n  heartbeatSec: 0\nlogLevel: info\n',
    );
  }

  async spawn(fault?: FaultPoint): Promise<Child> {
    this.port ||= await freePort();
    const proc = spawnNode(
      'test/controller/helpers/controller-main.ts',
      [
        '--config',
        join(this.dir, 'controller.yaml'),
        '--data',
        join(this.dir, 'data'),
        '--certs',
        join(this.dir, 'certs'),
        '--broker',
        this.broker.url,
        '--port',
        String(this.port),
      ],
      { OUTPOST_ADMIN_TOKEN: ADMIN_TOKEN, OUTPOST_FAULT_POINT: fault, OUTPOST_FAULT_SKIP: undefined },
      { name: `controller${fault ? `(${fault})` : ''}` },
    );
    await proc.waitForOutput(/controller API listening/, { timeoutMs: 20_000 });
    return { proc, url: `http://127.0.0.1:${this.port}` };
  }

  // biome-ignore lint/suspicious/noExplicitAny: test convenience over JSON bodies
  async call(c: Child, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const r = await fetch(`${c.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, json: await r.json() };
  }

  async setup(c: Child): Promise<void> {
    expect((await this.call(c, 'POST', '/v1/groups', { name: 'plant' })).status).toBe(201);
    for (const id of SITES) {
      const key = Buffer.from(siteSigner(id).publicKey).toString('base64');
      expect(
        (await this.call(c, 'POST', '/v1/sites', { id, uplinkKey: key, groups: ['plant'] })).status,
      ).toBe(201);
      const sim = new SimSite(id, this.broker.url, trustFor(controllerSigner()));
      await sim.connect();
      this.sims.push(sim);
    }
    expect((await this.call(c, 'POST', '/v1/stacks/web/revisions', { compose: webCompose(1) })).status).toBe(
      201,
    );
    expect((await this.call(c, 'POST', '/v1/stacks/app/revisions', { compose: webCompose(2) })).status).toBe(
      201,
    );
  }

  /** POSTs a deployment to a controller that may die while answering; returns the status or 'died'. */
  async deploy(c: Child, stack: string): Promise<number | 'died'> {
    try {
      return (await this.call(c, 'POST', '/v1/deployments', { stack, target: { group: 'plant' } })).status;
    } catch {
      return 'died';
    }
  }

  async close(): Promise<void> {
    for (const s of this.sims) await s.close();
  }
}

async function harness(): Promise<Harness> {
  const broker = await startBroker();
  const h = new Harness(broker);
  onCurrentTestFinished(async () => {
    await h.close();
    await broker.close();
  });
  return h;
}

/** I1 + I2 + [ORD-2] at every site: the expected seqs arrived, each applied once, prev chain intact, resends byte-identical. */
async function assertDelivered(h: Harness, c: Child, seqs: number[]): Promise<void> {
  await waitFor(
    async () => {
      for (const id of SITES) {
        const cmds = (await h.call(c, 'GET', `/v1/sites/${id}/commands`)).json.commands as {
          status: string;
        }[];
        if (cmds.length !== seqs.length || cmds.some((x) => x.status !== 'applied')) return false;
      }
      return true;
    },
    { timeoutMs: 20_000, message: `every site applied seqs ${seqs.join(',')}` },
  );
  for (const sim of h.sims) {
    expect(sim.applied, sim.site).toEqual(seqs);
    expect(sim.rejected).toEqual([]);
    const got = sim.commands();
    expect(got.map((x) => x.seq)).toEqual(seqs);
    expect(got.map((x) => x.prev)).toEqual([0, ...seqs.slice(0, -1)]);
    for (const seq of seqs) {
      const copies = new Set(sim.deliveries.filter((d) => d.cmd.seq === seq).map((d) => d.bytes));
      expect(copies.size, `${sim.site} seq ${seq}: one envelope, however often sent`).toBe(1);
      const row = (await h.call(c, 'GET', `/v1/sites/${sim.site}/commands/${seq}`)).json;
      expect(row.ref).toBe(Buffer.from(envelopeRef(Buffer.from([...copies][0]!, 'hex'))).toString('hex'));
    }
  }
}

describe('controller crash at fault points (SIGKILL)', () => {
  it('controller.after-commit-before-publish: the restarted controller sends the committed envelopes', {
    timeout: 90_000,
  }, async () => {
    const h = await harness();
    const first = await h.spawn('controller.after-commit-before-publish');
    await h.setup(first);
    const answer = await h.deploy(first, 'web');
    const exit = await first.proc.exited;
    expect(exit.signal).toBe('SIGKILL');
    expect([201, 'died']).toContain(answer);
    // Killed after the commit of the signed envelopes, before any publish.
    expect(h.sims.flatMap((s) => s.deliveries)).toEqual([]);

    const second = await h.spawn();
    await assertDelivered(h, second, [1]);
    // The seq counter survived: the next deployment continues the chain.
    expect(await h.deploy(second, 'app')).toBe(201);
    await assertDelivered(h, second, [1, 2]);
    await second.proc.kill('SIGTERM');
  });

  it('controller.after-publish-before-record: resends are the same bytes and apply once', {
    timeout: 90_000,
  }, async () => {
    const h = await harness();
    const first = await h.spawn('controller.after-publish-before-record');
    await h.setup(first);
    const answer = await h.deploy(first, 'web');
    const exit = await first.proc.exited;
    expect(exit.signal).toBe('SIGKILL');
    expect([201, 'died']).toContain(answer);
    // The broker had the first envelope when the controller died.
    await waitFor(() => h.sims.some((s) => s.deliveries.length > 0), {
      message: 'a delivery before the crash',
    });

    const second = await h.spawn();
    await assertDelivered(h, second, [1]);
    expect(await h.deploy(second, 'app')).toBe(201);
    await assertDelivered(h, second, [1, 2]);
    const exit2 = await second.proc.kill('SIGTERM');
    expect(exit2.code).toBe(0);
  });
});

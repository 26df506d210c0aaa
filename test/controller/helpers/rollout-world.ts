/**
 * A world for rollout tests: a real aedes broker, a controller (makeController: buildController with
 * its rollout engine, routes and retained status) on a data dir that survives `restart()`, a SCADA-like
 * subscriber of the retained rollout statuses, and scripted simulated sites speaking the real
 * protocol (SimSite: openCommand, signed acks and state).
 */
import type { FastifyInstance } from 'fastify';
import mqtt from 'mqtt';
import type { ConfigInput } from '../../../controller/src/config.js';
import { type Command, encodeState, PROTOCOL_VERSION, type StackState } from '../../../protocol/src/index.js';
import { onCurrentTestFinished, tmpDir } from '../../helpers/index.js';
import { startBroker, type TestBroker } from './broker.js';
import { type Fixture, makeController, type Res } from './fixture.js';
import { ADMIN_TOKEN, controllerSigner, trustFor } from './keys.js';
import { SimSite } from './sim-site.js';

/** What a scripted site does with a stack command. */
export type Behaviour = 'ok' | 'rolled-back' | 'unhealthy' | 'ignore';

export class ScriptedSite {
  readonly sim: SimSite;
  private readonly stacks = new Map<string, StackState>();
  private handled = 0;
  private stateUseq = 1_000_000;
  private timer: NodeJS.Timeout | undefined;
  /** Decides per command; default: apply and report healthy. */
  behaviour: (cmd: Command) => Behaviour = () => 'ok';

  constructor(
    readonly site: string,
    url: string,
  ) {
    this.sim = new SimSite(site, url, trustFor(controllerSigner()), { autoAck: false });
  }

  async connect(): Promise<void> {
    await this.sim.connect();
    this.handled = 0; // replays of queued deliveries are deduped by seq below
    this.timer = setInterval(() => void this.pump(), 30);
  }

  async goOffline(): Promise<void> {
    clearInterval(this.timer);
    await this.sim.goOffline();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.sim.close();
  }

  /** Stack commands received, in seq order (first delivery of each seq). */
  stackCommands(): Command[] {
    return this.sim.commands().filter((c) => c.type === 'stack.apply' || c.type === 'stack.remove');
  }

  /** Revisions of `stack` received in stack.apply commands, in seq order. */
  revsReceived(stack: string): number[] {
    return this.stackCommands()
      .filter((c) => c.type === 'stack.apply' && (c.body as { stack: string }).stack === stack)
      .map((c) => (c.body as { rev: number }).rev);
  }

  running(stack: string): StackState | undefined {
    return this.stacks.get(stack);
  }

  private readonly done = new Set<number>();
  private busy = false;

  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const r of this.sim.deliveries.slice(this.handled)) {
        this.handled++;
        const cmd = r.cmd;
        if (this.done.has(cmd.seq)) {
          // A duplicate delivery: re-ack its recorded outcome, never re-apply ([ORD-4]).
          continue;
        }
        this.done.add(cmd.seq);
        await this.sim.ackCommand(cmd, 'accepted');
        if (cmd.type !== 'stack.apply' && cmd.type !== 'stack.remove') {
          await this.sim.ackCommand(cmd, 'applied');
          continue;
        }
        const b = cmd.body as { stack: string; rev?: number };
        if (cmd.type === 'stack.remove') {
          this.stacks.delete(b.stack);
          await this.sim.ackCommand(cmd, 'applied', { stack: b.stack });
          await this.publishState();
          continue;
        }
        const rev = b.rev!;
        switch (this.behaviour(cmd)) {
          case 'ignore':
            break;
          case 'ok':
            this.stacks.set(b.stack, { name: b.stack, rev, want: rev, h: 'healthy', svc: [] });
            await this.sim.ackCommand(cmd, 'applied', { stack: b.stack, rev });
            await this.publishState();
            break;
          case 'rolled-back':
            // The local health gate failed: the agent kept (went back to) what it ran before.
            await this.sim.ackCommand(cmd, 'rolled-back', {
              stack: b.stack,
              rev,
              rc: 'health-timeout',
              msg: 'unhealthy',
            });
            await this.publishState();
            break;
          case 'unhealthy':
            this.stacks.set(b.stack, { name: b.stack, rev, want: rev, h: 'healthy', svc: [] });
            await this.sim.ackCommand(cmd, 'applied', { stack: b.stack, rev });
            await this.publishState();
            this.stacks.set(b.stack, { name: b.stack, rev, want: rev, h: 'unhealthy', svc: [] });
            await this.publishState();
            break;
        }
      }
    } catch {
      // disconnected meanwhile: the broker redelivers, the controller resends
    } finally {
      this.busy = false;
    }
  }

  async publishState(): Promise<void> {
    const bytes = encodeState(
      {
        v: PROTOCOL_VERSION,
        site: this.site,
        useq: ++this.stateUseq,
        at: Math.floor(Date.now() / 1000),
        full: true,
        last: this.sim.applied.at(-1) ?? 0,
        trust: this.sim.trust.version,
        stacks: [...this.stacks.values()],
        alarms: [],
      },
      this.sim.signer,
    );
    await this.sim.publishRaw('state', bytes);
  }
}

export interface RolloutWorld {
  readonly broker: TestBroker;
  readonly dataDir: string;
  f: Fixture;
  /** The controller's own API (every route, rollouts included). */
  readonly api: FastifyInstance;
  readonly sites: Map<string, ScriptedSite>;
  /** Calls the API (all routes, rollouts included) as admin unless a token is given. */
  call(method: string, url: string, body?: unknown, token?: string): Promise<Res>;
  site(id: string): Promise<ScriptedSite>;
  /** Closes controller + engine and builds them again on the same data dir. */
  restart(): Promise<void>;
  /** Retained rollout statuses seen on MQTT (by rollout id, latest last). */
  readonly statuses: Map<string, Record<string, unknown>[]>;
}

export async function rolloutWorld(o: { tickMs?: number; config?: ConfigInput } = {}): Promise<RolloutWorld> {
  const tickMs = o.tickMs ?? 100;
  const broker = await startBroker();
  const dataDir = tmpDir('rollout');
  const sites = new Map<string, ScriptedSite>();
  const statuses = new Map<string, Record<string, unknown>[]>();
  const watcher = await mqtt.connectAsync(broker.url, {
    clientId: `scada-${Math.random().toString(16).slice(2)}`,
    protocolVersion: 4,
  });
  watcher.on('message', (topic, payload) => {
    const id = topic.split('/')[3]!;
    const list = statuses.get(id) ?? [];
    list.push(JSON.parse(payload.toString('utf8')) as Record<string, unknown>);
    statuses.set(id, list);
  });
  await watcher.subscribeAsync('outpost/v1/rollout/+/status', { qos: 1 });

  const config: ConfigInput = { ...o.config, outbox: { ...o.config?.outbox, tickMs } };
  let f = await makeController({ brokerUrl: broker.url, dataDir, config });
  const stop = async (): Promise<void> => {
    await f.close();
  };
  const w: RolloutWorld = {
    broker,
    dataDir,
    f,
    get api() {
      return w.f.controller.app;
    },
    sites,
    statuses,
    async call(method, url, body, token = ADMIN_TOKEN) {
      const r = await w.api.inject({
        method: method as 'GET',
        url,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
      });
      const contentType = String(r.headers['content-type'] ?? '');
      return {
        status: r.statusCode,
        contentType,
        json: contentType.includes('json') ? r.json() : undefined,
        text: r.body,
      };
    },
    async site(id) {
      const s = new ScriptedSite(id, broker.url);
      sites.set(id, s);
      await s.connect();
      return s;
    },
    async restart() {
      await stop();
      f = await makeController({ brokerUrl: broker.url, dataDir, config });
      w.f = f;
    },
  };
  onCurrentTestFinished(async () => {
    await stop();
    for (const s of sites.values()) await s.close();
    await watcher.endAsync(true);
    await broker.close();
  });
  return w;
}

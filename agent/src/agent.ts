/**
 * The agent's composition root: `createAgent(deps)` wires the database, trust, journal, sequencer,
 * executor, outbox, state, status and transport around a StackRuntime. `cli.ts` wires the real parts
 * (DockerRuntime, files from the certs layout); tests pass a MemoryRuntime, a clock, a logger and
 * optionally an MQTT factory or a signer.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { basename } from 'node:path';
import type { Logger } from 'pino';
import {
  type Clock,
  createSigner,
  privateKeyFromPem,
  type Signer,
  type StackState,
  siteKid,
  systemClock,
  Topics,
  TrustedTime,
} from '../../protocol/src/index.js';
import type { AgentConfig } from './config.js';
import { Alarms } from './core/alarms.js';
import { type Db, openAgentDb } from './core/db.js';
import { DeferralGate } from './core/deferral.js';
import { DiskGuard } from './core/disk.js';
import { Executor, toDesired } from './core/executor.js';
import { Journal } from './core/journal.js';
import { Outbox } from './core/outbox.js';
import { Sequencer } from './core/sequencer.js';
import { StateReporter } from './core/state.js';
import { ControlPlaneMonitor, StatusPublisher } from './core/status.js';
import { AgentStore, META } from './core/store.js';
import { type MqttFactory, Transport } from './core/transport.js';
import { PinnedTrust } from './core/trust.js';
import { Uplink } from './core/uplink.js';
import type { DesiredStack, StackRuntime } from './runtime/types.js';
import { AGENT_VERSION } from './version.js';

/** How long close() waits for executing commands. */
const CLOSE_WAIT_MS = 10_000;

export interface AgentDeps {
  readonly config: AgentConfig;
  readonly runtime: StackRuntime;
  readonly log: Logger;
  readonly clock?: Clock;
  /** An already open database (default: open `config.dbPath`, quarantining a corrupt one). */
  readonly db?: Db;
  readonly mqtt?: MqttFactory;
  /** Uplink signer (default: read `config.uplinkKey`). */
  readonly signer?: Signer;
  /** Free bytes in the data folder (default: statfs). */
  readonly diskFree?: () => number;
  readonly version?: string;
}

export interface AgentStatus {
  readonly site: string;
  /** Connected to the broker with the command subscription in place. */
  readonly connected: boolean;
  readonly contig: number;
  readonly applied: number;
  readonly trustVersion: number;
  readonly stacks: readonly StackState[];
  readonly queues: Record<string, number>;
  readonly outbox: { rows: number; bytes: number; acks: number; states: number; drops: number };
  readonly alarms: ReturnType<Alarms['list']>;
  readonly lastContactMs: number;
  readonly quarantined?: string;
}

export interface Agent {
  start(): Promise<void>;
  close(): Promise<void>;
  status(): AgentStatus;
}

export function createAgent(deps: AgentDeps): Agent {
  const { config, runtime } = deps;
  const clock = deps.clock ?? systemClock;
  const nowMs = () => clock.now();
  /** Throttles and settle delays run on monotonic time: a wall-clock jump must not stall them. */
  const mono = () => performance.now();
  const site = config.site;
  const log = deps.log.child({ site });
  const version = deps.version ?? AGENT_VERSION;
  const topics = new Topics(config.topicPrefix);
  const diskFree =
    deps.diskFree ??
    (() => {
      const s = statfsSync(config.dataDir);
      return s.bavail * s.bsize;
    });

  let db: Db | undefined;
  let ownsDb = false;
  let quarantined: string | undefined;
  let parts: ReturnType<typeof wire> | undefined;
  let started = false;

  function wire(db: Db) {
    const store = new AgentStore(db);
    const alarms = new Alarms(store, clock, log.child({ component: 'agent.alarms' }));
    const trust = PinnedTrust.load(store, config.trustRoot, log.child({ component: 'agent.trust' }));
    // The pinned trust root's signed issued-at is a floor too: a fresh device with its clock at 1970
    // still judges expiry (and accepts current commands) before it has seen a command ([TIME-1]).
    const time = new TrustedTime(clock, Math.max(store.metaInt(META.timeFloor), trust.current.root.iat));
    const signer =
      deps.signer ??
      createSigner(siteKid(site), privateKeyFromPem(readFileSync(config.uplinkKey, 'utf8')).seed);
    const outbox = new Outbox(
      store,
      alarms,
      { maxBytes: config.outboxMaxBytes },
      clock,
      log.child({ component: 'agent.outbox' }),
    );
    const uplink = new Uplink(site, signer, store, outbox, topics, () => time.nowSec());

    let desiredCache: DesiredStack[] = [];
    const refreshDesired = () => {
      desiredCache = store.desiredAll().flatMap((r) => {
        try {
          const d = toDesired(r);
          return d ? [d] : [];
        } catch (err) {
          log.error({ stack: r.name, err: (err as Error).message }, 'desired stack unreadable; not applied');
          return [];
        }
      });
    };
    refreshDesired();

    let sequencer: Sequencer | undefined;
    let reporter: StateReporter | undefined;
    let status: StatusPublisher | undefined;
    const changed = () => {
      reporter?.changed();
      status?.changed();
    };
    const executor = new Executor(
      store,
      runtime,
      uplink,
      alarms,
      { deadlineMs: config.healthDeadlineMs, runningForMs: config.healthRunningForMs },
      {
        desiredChanged: refreshDesired,
        finished: () => {
          sequencer?.finished();
          outbox.kick();
          changed();
        },
      },
      nowMs,
      log.child({ component: 'agent.executor' }),
      // Windows are judged by trusted time ([TIME-1], [MW-4]).
      new DeferralGate(
        { locksDir: config.locksDir, lockPollMs: config.lockPollMs, recheckMs: config.maintenanceRecheckMs },
        () => Math.max(clock.now(), time.floor * 1000),
      ),
    );
    sequencer = new Sequencer(
      store,
      executor,
      alarms,
      { gapHoldMs: config.gapHoldMs, settleMs: config.settleMs, journalKeep: config.journalKeep },
      mono,
      log.child({ component: 'agent.sequencer' }),
    );
    const seq = sequencer;
    reporter = new StateReporter(
      {
        store,
        runtime,
        alarms,
        outbox,
        uplink,
        trustVersion: () => trust.version,
        applied: () => seq.watermark.applied,
        agentVersion: version,
      },
      config.stateMinIntervalMs,
      mono,
      log.child({ component: 'agent.state' }),
    );
    const rep = reporter;
    const monitor = new ControlPlaneMonitor(
      store,
      alarms,
      { intervalSec: config.heartbeatIntervalSec, missed: config.heartbeatMissed },
      nowMs,
    );
    let transport: Transport | undefined;
    status = new StatusPublisher(
      {
        site,
        agentVersion: version,
        topics,
        store,
        outbox,
        alarms,
        stacks: () => rep.stacks,
        applied: () => seq.watermark.applied,
        direct: (topic, payload) => {
          if (transport?.connected)
            transport.publish(topic, payload, { retain: true }).catch(() => undefined);
        },
      },
      config.stateMinIntervalMs,
      nowMs,
      log.child({ component: 'agent.status' }),
      mono,
    );
    const stat = status;
    const journal = new Journal(
      { site, maxEnvelopeBytes: config.maxEnvelopeBytes, allowTags: config.allowTags },
      store,
      outbox,
      uplink,
      trust,
      time,
      alarms,
      {
        onHeartbeat: (last) => seq.heartbeat(last),
        onStateRequest: () => rep.requestFull(),
        onTrustChanged: () => rep.changed(),
      },
      nowMs,
      log.child({ component: 'agent.journal' }),
    );

    alarms.onChange(changed);
    rep.onView = (stacks) => {
      stat.changed();
      try {
        store.tx(() => {
          store.setMeta(META.lastView, JSON.stringify(stacks));
          store.setMeta(META.lastViewAt, nowMs());
        });
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'cannot record the stack view');
      }
    };
    outbox.onStateEvicted = () => rep.requestFull();

    const disk = new DiskGuard(
      diskFree,
      config.diskMinFreeBytes,
      config.diskCheckMs,
      alarms,
      () => transport?.bounce(),
      log.child({ component: 'agent.disk' }),
    );

    transport = new Transport(
      {
        url: config.broker,
        clientId: site,
        keepaliveSec: config.keepaliveSec,
        connectTimeoutMs: config.connectTimeoutMs,
        reconnectMinMs: config.reconnectMinMs,
        reconnectMaxMs: config.reconnectMaxMs,
        cmdTopic: topics.cmd(site),
        statusTopic: topics.status(site),
        will: () => stat.will(),
        ...(config.broker.startsWith('mqtts:')
          ? {
              tls: {
                cert: readFileSync(config.cert),
                key: readFileSync(config.key),
                ca: readFileSync(config.ca),
              },
            }
          : {}),
      },
      {
        onCommand: (payload) => {
          if (disk.blocked()) return false;
          const r = journal.intake(payload);
          if (r.kind === 'hold') {
            if (r.reason === 'disk-full') disk.enter();
            return false;
          }
          if (r.kind === 'journalled') {
            const before = seq.watermark.applied;
            seq.journalled();
            monitor.check();
            const after = seq.watermark.applied;
            // A heartbeat that moved the watermark onto its own seq (or not at all) changed nothing the
            // controller or SCADA need to hear beyond its signed ack ([HB-2]); alarm changes it caused
            // (stale-control-plane, seq-gap cleared) are published through alarms.onChange.
            if (r.type === 'heartbeat' && (after === before || after === r.seq)) {
              rep.heartbeatApplied(before, after);
              stat.heartbeatApplied(before, after);
            } else changed();
          }
          return true;
        },
        onConnect: () => {
          stat.publishNow();
          rep.requestFull();
          outbox.kick();
        },
        onDisconnect: () => undefined,
      },
      log.child({ component: 'agent.transport' }),
      deps.mqtt,
    );
    outbox.attach(transport);

    return {
      store,
      alarms,
      trust,
      outbox,
      executor,
      sequencer: seq,
      reporter: rep,
      status: stat,
      monitor,
      transport,
      desired: () => desiredCache.filter((d) => !executor.busy.has(d.name)),
      disk,
    };
  }

  return {
    async start() {
      if (started) throw new Error('agent already started');
      started = true;
      if (deps.db) db = deps.db;
      else {
        const opened = openAgentDb(config.dbPath, log.child({ component: 'agent.db' }), nowMs());
        db = opened.db;
        ownsDb = true;
        quarantined = opened.quarantined;
      }
      const p = wire(db);
      parts = p;
      p.store.tx(() => {
        p.store.setMeta(META.boots, p.store.metaInt(META.boots) + 1);
        p.store.setMeta(META.site, site);
      });
      if (quarantined) {
        p.alarms.raise('db-corrupt', `corrupt database quarantined as ${basename(quarantined)}`);
        // The uplink sequence must keep increasing for the controller ([ACK-2]): restart it above
        // anything the lost database can have used (one per message, far below the time in ms).
        p.store.setMeta(META.useq, Math.max(nowMs(), p.store.metaInt(META.timeFloor) * 1000));
      }
      p.sequencer.start();
      try {
        await runtime.startReconciler(p.desired, () => {
          p.reporter.changed();
          p.status.changed();
        });
      } catch (err) {
        // The agent still journals and acks; the state shows the runtime is unreachable.
        log.error({ err: (err as Error).message }, 'runtime reconciler did not start');
        p.alarms.raise('runtime-unreachable', `reconciler: ${(err as Error).message}`);
      }
      p.monitor.start();
      p.reporter.requestFull();
      p.transport.start();
      log.info(
        { ...p.sequencer.watermark, trustVersion: p.trust.version, stacks: p.desired().length },
        'agent started',
      );
    },

    async close() {
      const p = parts;
      parts = undefined;
      if (!p) return;
      p.disk.close();
      p.monitor.close();
      // A long apply (an image pull) must not hold a shutdown hostage: whatever is still executing is
      // journalled `executing` and is resumed at the next start (I2).
      const closing = p.sequencer.close();
      const waited = await Promise.race([
        closing.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), CLOSE_WAIT_MS).unref()),
      ]);
      if (!waited)
        log.warn({ waitMs: CLOSE_WAIT_MS }, 'commands still executing at shutdown; resumed at next start');
      await p.reporter.settle().catch(() => undefined);
      p.reporter.close();
      p.status.close();
      let final: Uint8Array | undefined;
      try {
        final = p.status.offline('shutdown');
      } catch {
        final = undefined;
      }
      await p.transport.close(final);
      p.outbox.close();
      await runtime.close();
      if (ownsDb) db?.close();
      log.info('agent stopped');
    },

    status(): AgentStatus {
      const p = parts;
      if (!p) throw new Error('agent not started');
      return {
        site,
        connected: p.transport.ready,
        ...p.sequencer.watermark,
        trustVersion: p.trust.version,
        stacks: p.reporter.stacks,
        queues: p.sequencer.depths(),
        outbox: p.outbox.stats(),
        alarms: p.alarms.list(),
        lastContactMs: p.store.metaInt(META.lastContact),
        ...(quarantined ? { quarantined } : {}),
      };
    },
  };
}
